"""A scriptable mock upstream: an aiohttp server on 127.0.0.1 that records what it receives.

Each provider mock (OpenAI, Anthropic, Cohere) subclasses MockUpstream and supplies its routes,
its auth check, its request validation, the SSE framing and the rendering of a `Reply`. Tests
drive a mock by queueing responses:

- `Reply`: a chat answer in provider-neutral terms (text, tool calls, finish value, usage);
  the mock renders it as a JSON body or an SSE stream, whichever the request asked for.
- `Scripted`: exact status, headers, JSON body or SSE events, with delays and a cut connection.
- a callable taking the RecordedRequest and returning either of the above.

When the queue is empty the mock responds with its default reply. Every request is recorded
with its path, headers and JSON body, together with the call count and the maximum number of
requests in flight at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import socket
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web
from multidict import CIMultiDict

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class SSE:
    """One server-sent event. `event` is the `event:` line; None sends `data:` only."""

    data: Any
    event: str | None = None
    delay: float = 0.0  # seconds to wait before sending this event

    def frame(self) -> bytes:
        payload = self.data if isinstance(self.data, str) else json.dumps(self.data)
        head = f"event: {self.event}\n" if self.event is not None else ""
        return f"{head}data: {payload}\n\n".encode()


@dataclass(slots=True)
class Scripted:
    """An exact response. With `events` set the body is an SSE stream."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None  # JSON-encoded unless it is already str or bytes
    events: list[SSE] | None = None
    cut_after: int | None = None  # close the connection abruptly after this many events
    delay: float = 0.0  # seconds to wait before sending the response


@dataclass(slots=True)
class ToolCallSpec:
    id: str
    name: str
    arguments: str  # a JSON document as a string


@dataclass(slots=True)
class Reply:
    """A chat response the mock renders in its provider's wire format.

    `finish` and `usage` are in the provider's own terms (for example "end_turn" and Anthropic
    usage keys); None picks a default that fits the text and tool calls.
    """

    text: str = "Hello from the mock."
    tool_calls: list[ToolCallSpec] = field(default_factory=list)
    finish: str | None = None
    usage: dict[str, Any] | None = None
    chunk_size: int = 4  # characters per streamed text or argument fragment
    headers: dict[str, str] = field(default_factory=dict)
    cut_after: int | None = None
    event_delay: float = 0.0
    delay: float = 0.0


Response = Reply | Scripted
ResponseSource = Response | Callable[["RecordedRequest"], Response]


@dataclass(slots=True)
class RecordedRequest:
    method: str
    path: str
    headers: CIMultiDict[str]  # looked up case-insensitively, as HTTP headers are
    json: Any
    peer_port: int | None  # the client's source port, to tell pooled connections apart

    @property
    def stream(self) -> bool:
        return isinstance(self.json, dict) and bool(self.json.get("stream"))


class RequestRejected(Exception):
    """Raised by a mock's validation to answer with an error like the real API does."""

    def __init__(self, status: int, message: str, error_type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type


def fragments(text: str, size: int) -> list[str]:
    """Split `text` into pieces of `size` characters (at least one piece)."""
    size = max(1, size)
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def word_count(value: Any) -> int:
    """Count the words of every string inside a JSON value; mocks derive token counts from it."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, dict):
        return sum(word_count(item) for item in value.values())
    if isinstance(value, list):
        return sum(word_count(item) for item in value)
    return 0


class MockUpstream:
    """Base of the provider mocks; see the module docstring for how to script one."""

    name = "mock"
    default_key = "mock-key-0123456789"
    #: path prefix the provider's SDK expects in base_url ("/v1" for OpenAI)
    base_path = ""

    def __init__(self, api_key: str | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.api_key = api_key if api_key is not None else self.default_key
        self.host = host
        self.requested_port = port
        self.port = 0
        self.queue: deque[ResponseSource] = deque()
        self.default: ResponseSource = Reply()
        self.requests: list[RecordedRequest] = []
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._runner: web.AppRunner | None = None

    # -- scripting ------------------------------------------------------------------------------

    def enqueue(self, *responses: ResponseSource) -> None:
        self.queue.extend(responses)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}{self.base_path}"

    @property
    def last(self) -> RecordedRequest:
        return self.requests[-1]

    # -- provider hooks -----------------------------------------------------------------------------

    def routes(self) -> dict[tuple[str, str], Callable[[RecordedRequest], None]]:
        """Return (method, path) -> validator; the validator raises RequestRejected."""
        raise NotImplementedError

    def check_auth(self, request: RecordedRequest) -> None:
        raise NotImplementedError

    def error_body(self, status: int, message: str, error_type: str) -> Any:
        raise NotImplementedError

    def render(self, request: RecordedRequest, reply: Reply) -> Scripted:
        raise NotImplementedError

    def render_default(self, request: RecordedRequest) -> Scripted | None:
        """Answer non-chat routes (embeddings) when the queue is empty; None renders `default`."""
        return None

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> Self:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation stops a delayed answer as soon as the client gives up (a read
        # timeout), so that in_flight drops at once and stop() does not wait for the delay.
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.requested_port))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- request handling -------------------------------------------------------------------------

    async def _handle(self, http: web.Request) -> web.StreamResponse:
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(http)
        finally:
            self.in_flight -= 1

    async def _answer(self, http: web.Request) -> web.StreamResponse:
        raw = await http.read()
        peer = http.transport.get_extra_info("peername") if http.transport else None
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = raw.decode(errors="replace")
        recorded = RecordedRequest(http.method, http.path, CIMultiDict(http.headers), body, peer[1] if peer else None)
        self.requests.append(recorded)

        try:
            self.check_auth(recorded)
            validate = self.routes().get((http.method, http.path))
            if validate is None:
                raise RequestRejected(404, f"no route for {http.method} {http.path}", "not_found_error")
            if not isinstance(body, dict):
                raise RequestRejected(400, "the request body must be a JSON object")
            validate(recorded)
        except RequestRejected as rejected:
            return web.json_response(
                self.error_body(rejected.status, rejected.message, rejected.error_type), status=rejected.status
            )

        return await self.send(http, self._next_response(recorded))

    def _next_response(self, recorded: RecordedRequest) -> Scripted:
        source: ResponseSource | None = self.queue.popleft() if self.queue else None
        if source is None:
            fallback = self.render_default(recorded)
            if fallback is not None:
                return fallback
            source = self.default
        response = source(recorded) if callable(source) else source
        return self.render(recorded, response) if isinstance(response, Reply) else response

    async def send(self, http: web.Request, scripted: Scripted) -> web.StreamResponse:
        if scripted.delay:
            await asyncio.sleep(scripted.delay)
        if scripted.events is None:
            return _plain_response(scripted)

        response = web.StreamResponse(status=scripted.status, headers=scripted.headers)
        response.content_type = "text/event-stream"
        await response.prepare(http)
        for sent, event in enumerate(scripted.events):
            if scripted.cut_after is not None and sent >= scripted.cut_after:
                # Drop the socket without the chunked-encoding terminator, as a dying proxy would.
                if http.transport is not None:
                    http.transport.abort()
                return response
            if event.delay:
                await asyncio.sleep(event.delay)
            await response.write(event.frame())
        await response.write_eof()
        return response


def _plain_response(scripted: Scripted) -> web.Response:
    if isinstance(scripted.body, bytes):
        return web.Response(status=scripted.status, headers=scripted.headers, body=scripted.body)
    if isinstance(scripted.body, str):
        return web.Response(status=scripted.status, headers=scripted.headers, text=scripted.body)
    headers = {"Content-Type": "application/json", **scripted.headers}
    return web.Response(status=scripted.status, headers=headers, text=json.dumps(scripted.body))


def bearer_token(request: RecordedRequest) -> str | None:
    header = request.headers.get("Authorization")
    if header is None or not header.startswith("Bearer "):
        return None
    return header[len("Bearer ") :]


def run_standalone(factory: Callable[[str | None, int], MockUpstream], argv: Sequence[str] | None = None) -> None:
    """Serve one mock until interrupted, printing its base URL on the first line of stdout."""
    parser = argparse.ArgumentParser(description="Serve a mock provider API on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="TCP port to listen on (0 picks a free one)")
    parser.add_argument("--api-key", default=None, help="the key clients must send (default: the mock's own)")
    options = parser.parse_args(argv)

    async def serve() -> None:
        mock = await factory(options.api_key, options.port).start()
        print(mock.base_url, flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await mock.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
