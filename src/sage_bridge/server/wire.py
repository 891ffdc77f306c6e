"""OpenAI Chat Completions wire format: response bodies, stream chunks and SSE framing."""

from __future__ import annotations

import base64
import struct
import time
from typing import Any

import orjson

from sage_bridge.ids import completion_id
from sage_bridge.types import ChatResult, EmbeddingRequest, EmbeddingResult, StreamEvent, Usage

DONE = b"data: [DONE]\n\n"


def dumps(data: Any) -> bytes:
    return orjson.dumps(data)


def sse(data: Any) -> bytes:
    return b"data: " + dumps(data) + b"\n\n"


def chat_completion_body(result: ChatResult, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": result.content, "refusal": result.refusal}
    if result.tool_calls:
        message["tool_calls"] = [call.model_dump() for call in result.tool_calls]
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": result.finish_reason}],
        "usage": result.usage.to_openai(),
    }


def embeddings_body(result: EmbeddingResult, request: EmbeddingRequest) -> dict[str, Any]:
    data = [
        {"object": "embedding", "index": index, "embedding": _encode_vector(vector, request.encoding_format)}
        for index, vector in enumerate(result.vectors)
    ]
    usage = {"prompt_tokens": result.usage.prompt_tokens, "total_tokens": result.usage.prompt_tokens}
    return {"object": "list", "data": data, "model": request.model, "usage": usage}


def _encode_vector(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        # OpenAI's base64 form: little-endian float32, which the SDK decodes by default.
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


class ChunkWriter:
    """Turns StreamEvents into OpenAI `chat.completion.chunk` SSE events.

    OpenAI's order: a first delta carrying the role, content or tool-call deltas, one chunk with
    finish_reason and an empty delta, then (only when the client set include_usage) a chunk with
    empty choices and the usage. With include_usage every other chunk carries `"usage": null`.
    """

    def __init__(self, model: str, include_usage: bool) -> None:
        self.id = completion_id()
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage
        self.role_sent = False

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if self.include_usage:
            chunk["usage"] = None
        return sse(chunk)

    def event(self, event: StreamEvent) -> bytes:
        """Return the SSE bytes for one event (possibly none, for an event with no output)."""
        if event.tool_call is not None:
            return self._tool_call(event)
        out = b""
        if event.content or event.finish_reason is not None:
            out += self._role(content="")
        if event.content:
            out += self._chunk({"content": event.content})
        if event.finish_reason is not None:
            out += self._chunk({}, event.finish_reason)
        return out

    def usage(self, usage: Usage) -> bytes:
        if not self.include_usage:
            return b""
        return sse({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage.to_openai(),
        })

    def _role(self, content: str | None) -> bytes:
        if self.role_sent:
            return b""
        self.role_sent = True
        return self._chunk({"role": "assistant", "content": content, "refusal": None})

    def _tool_call(self, event: StreamEvent) -> bytes:
        call = event.tool_call
        assert call is not None
        fragment: dict[str, Any] = {"index": call.index}
        if call.id is not None:
            fragment["id"] = call.id
            fragment["type"] = "function"
        function: dict[str, Any] = {"arguments": call.arguments}
        if call.name is not None:
            function = {"name": call.name, "arguments": call.arguments}
        fragment["function"] = function
        delta: dict[str, Any] = {"tool_calls": [fragment]}
        if not self.role_sent:
            # A tool-call stream carries the role in its first tool-call delta, with null content.
            self.role_sent = True
            delta = {"role": "assistant", "content": None, **delta}
        return self._chunk(delta)


def error_event(body: dict[str, Any]) -> bytes:
    """Return the SSE event OpenAI sends for an error after a stream started; no [DONE] follows it."""
    return sse(body)
