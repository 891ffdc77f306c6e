"""An in-process bridge app on a temporary Unix socket, and a small OpenAI-shaped upstream mock.

The app is the real one (`build_app` over a real Runtime); only the upstream is a mock, an
aiohttp server on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from sage_bridge.config.loader import load_config
from sage_bridge.config.settings import DaemonSettings
from sage_bridge.graph.compiler import compile_graph
from sage_bridge.runtime import Runtime
from sage_bridge.server.app import build_app

PROMPT_TOKENS = 12
COMPLETION_TOKENS = 5


@dataclass
class Upstream:
    """An OpenAI-shaped mock. Mode "ok" returns a completion, and "echo_key_401" a 401 that repeats the key."""

    mode: str = "ok"
    base_url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        if self.mode == "echo_key_401":
            key = request.headers.get("Authorization", "").removeprefix("Bearer ")
            error = {"message": f"Incorrect API key provided: {key}.", "type": "invalid_request_error",
                     "param": None, "code": "invalid_api_key"}
            return web.json_response({"error": error}, status=401)
        if body.get("stream"):
            return await self._stream(request, body)
        return web.json_response({
            "id": "chatcmpl-mock", "object": "chat.completion", "created": 1767225600, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
                      "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS},
        })

    async def _stream(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        base = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1767225600, "model": body["model"]}
        for delta, finish in (({"role": "assistant", "content": ""}, None), ({"content": "Paris."}, None), ({}, "stop")):
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
                 "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS}
        await response.write(b"data: " + json.dumps({**base, "choices": [], "usage": usage}).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        return response


@contextlib.asynccontextmanager
async def serve_post(path: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[str]:
    """Serve `handler` for POSTs to `path` on 127.0.0.1; yield the server's "http://127.0.0.1:PORT"."""
    app = web.Application()
    app.router.add_post(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def serve_upstream(mode: str = "ok") -> AsyncIterator[Upstream]:
    upstream = Upstream(mode)
    async with serve_post("/v1/chat/completions", upstream.chat) as origin:
        upstream.base_url = f"{origin}/v1"
        yield upstream


def cloud_config(base_url: str, api_key: str = "sk-test-0123456789", server: str = "", extra: str = "") -> str:
    """A bridge.yaml with one priced deployment on the mock upstream behind route `default`."""
    return f"""\
version: 1
server:
  socket_mode: "0600"
{server}
providers:
  cloud: {{type: openai, base_url: "{base_url}", api_key: "{api_key}"}}
models:
  gpt-mock: {{provider: cloud, model: gpt-mock, rpm: 600, price: {{input: 1.0, output: 2.0}}}}
routes:
  default: {{targets: [gpt-mock], retry: once}}
retry_policies:
  once: {{attempts: 1}}
{extra}"""


@dataclass
class AppUnderTest:
    app: web.Application
    runtime: Runtime
    runner: web.AppRunner
    session: aiohttp.ClientSession
    socket: Path


@contextlib.asynccontextmanager
async def serve_app(tmp_path: Path, config_text: str) -> AsyncIterator[AppUnderTest]:
    """Serve the real app for `config_text` on a Unix socket, with a client session bound to it."""
    config = tmp_path / "bridge.yaml"
    config.write_text(config_text)
    graph = compile_graph(load_config(config, dict(os.environ)))
    socket_path = Path(f"/tmp/sb-app-{os.getpid()}-{uuid.uuid4().hex[:10]}.sock")
    settings = DaemonSettings(config=config, socket=socket_path, state_dir=tmp_path / "state")
    runtime = await Runtime.start(settings, graph)
    app = build_app(runtime)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.UnixSite(runner, str(socket_path)).start()
    session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket_path)), base_url="http://localhost")
    try:
        yield AppUnderTest(app, runtime, runner, session, socket_path)
    finally:
        await session.close()
        await runner.cleanup()
        await runtime.close()
        socket_path.unlink(missing_ok=True)


def chat_body(model: str = "default", **params: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "What is the capital of France?"}], **params}
