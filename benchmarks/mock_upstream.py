"""A fast OpenAI-compatible upstream for load tests, run as its own process on 127.0.0.1.

It serves `POST /v1/chat/completions` (JSON, or SSE when `stream` is true) and
`POST /v1/embeddings`, does no validation beyond what the response needs, and prints
`READY <port>` on stdout once it listens. Run it alone with
`python -m benchmarks.mock_upstream --port 8001 --delay-ms 5`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
from array import array
from dataclasses import dataclass
from typing import Any

from aiohttp import web

CREATED = 1767225600
EMBEDDING_DIMENSIONS = 8
_WORDS = ("The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", ".")


@dataclass(frozen=True, slots=True)
class MockSettings:
    delay: float  # seconds before the response (and before a stream's first chunk)
    chunk_delay: float  # seconds between two content chunks of a stream
    chunks: int  # content chunks per response; each counts as one completion token


def dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def prompt_tokens(body: dict[str, Any]) -> int:
    """Estimate prompt tokens as OpenAI's rule of thumb does: about 4 characters a token."""
    characters = sum(len(str(message.get("content") or "")) for message in body.get("messages", []))
    return 1 + characters // 4 + 3 * len(body.get("messages", []))


def output_limit(body: dict[str, Any], chunks: int) -> tuple[int, str]:
    """Return the number of content chunks to send and the finish reason."""
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int) and 0 < limit < chunks:
        return limit, "length"
    return chunks, "stop"


def usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


class MockUpstream:
    def __init__(self, settings: MockSettings) -> None:
        self.settings = settings
        self.sequence = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/embeddings", self.embeddings)
        return app

    def _next_id(self) -> str:
        self.sequence += 1
        return f"chatcmpl-mock{self.sequence}"

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.read())
        if self.settings.delay:
            await asyncio.sleep(self.settings.delay)
        if body.get("stream"):
            return await self._stream(request, body)

        count, finish = output_limit(body, self.settings.chunks)
        prompt = prompt_tokens(body)
        payload = {
            "id": self._next_id(),
            "object": "chat.completion",
            "created": CREATED,
            "model": body.get("model", "mock"),
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": _text(count), "refusal": None},
                "logprobs": None,
                "finish_reason": finish,
            }],
            "usage": usage(prompt, count),
        }
        return web.Response(body=dumps(payload), content_type="application/json")

    async def _stream(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        count, finish = output_limit(body, self.settings.chunks)
        options = body.get("stream_options") or {}
        include_usage = bool(options.get("include_usage"))
        frame = _ChunkFrame(self._next_id(), body.get("model", "mock"), include_usage)

        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        await response.write(frame.chunk({"role": "assistant", "content": "", "refusal": None}))
        for index in range(count):
            if index and self.settings.chunk_delay:
                await asyncio.sleep(self.settings.chunk_delay)
            await response.write(frame.chunk({"content": _WORDS[index % len(_WORDS)]}))
        tail = frame.chunk({}, finish)
        if include_usage:
            tail += frame.usage(usage(prompt_tokens(body), count))
        await response.write(tail + b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def embeddings(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        if self.settings.delay:
            await asyncio.sleep(self.settings.delay)
        inputs = body.get("input", "")
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        dimensions = int(body.get("dimensions") or EMBEDDING_DIMENSIONS)
        as_base64 = body.get("encoding_format") == "base64"
        data = [
            {"object": "embedding", "index": index, "embedding": _vector(str(text), dimensions, as_base64)}
            for index, text in enumerate(texts)
        ]
        tokens = sum(1 + len(str(text)) // 4 for text in texts)
        payload = {
            "object": "list",
            "data": data,
            "model": body.get("model", "mock"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return web.Response(body=dumps(payload), content_type="application/json")


class _ChunkFrame:
    """Builds the `chat.completion.chunk` events of one stream; id and created never change."""

    def __init__(self, completion_id: str, model: str, include_usage: bool) -> None:
        self.base = {"id": completion_id, "object": "chat.completion.chunk", "created": CREATED, "model": model}
        self.include_usage = include_usage

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        chunk: dict[str, Any] = {
            **self.base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if self.include_usage:
            chunk["usage"] = None  # OpenAI sends an explicit null on every chunk before the usage chunk
        return b"data: " + dumps(chunk) + b"\n\n"

    def usage(self, counts: dict[str, Any]) -> bytes:
        return b"data: " + dumps({**self.base, "choices": [], "usage": counts}) + b"\n\n"


def _text(count: int) -> str:
    return "".join(_WORDS[index % len(_WORDS)] for index in range(count))


def _vector(text: str, dimensions: int, as_base64: bool) -> list[float] | str:
    seed = sum(text.encode()) or 1
    values = [((seed * (index + 7)) % 997) / 997 - 0.5 for index in range(dimensions)]
    if not as_base64:
        return values
    packed = array("f", values)
    if sys.byteorder == "big":
        packed.byteswap()  # the OpenAI SDK decodes little-endian float32
    return base64.b64encode(packed.tobytes()).decode()


async def serve(host: str, port: int, settings: MockSettings, stop_after: float) -> None:
    runner = web.AppRunner(MockUpstream(settings).app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"READY {bound}", flush=True)
    try:
        # A forgotten mock must not run forever: it exits after stop_after seconds.
        await asyncio.sleep(stop_after)
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a fast OpenAI-compatible mock for load tests.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback only)")
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one (printed as READY PORT)")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="milliseconds before each response")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0, help="milliseconds between stream chunks")
    parser.add_argument("--chunks", type=int, default=16, help="content chunks (completion tokens) per response")
    parser.add_argument("--stop-after", type=float, default=4 * 3600.0, help="seconds after which the mock exits")
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        parser.error(f"--host {args.host}: the mock serves on loopback only; use 127.0.0.1")

    settings = MockSettings(delay=args.delay_ms / 1000, chunk_delay=args.chunk_delay_ms / 1000, chunks=args.chunks)
    try:
        asyncio.run(serve(args.host, args.port, settings, args.stop_after))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
