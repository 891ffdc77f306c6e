"""A small HTTP client for Chat Completions on aiohttp, used in place of the openai SDK.

The SDK costs several times the CPU of the request itself: it transforms the typed request,
runs httpx2, httpcore2 and anyio underneath, and builds pydantic objects from every chunk. The
chat path only needs a JSON POST and an SSE reader, so this module does those directly:
non-streamed responses through an http_pool.HTTPPool and streams through one pooled aiohttp
session per provider. Errors are raised as the exception classes below (or aiohttp's own), which
openai_errors maps onto UpstreamError.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDictProxy

from sage_bridge.config.schema import OpenAIProviderConfig
from sage_bridge.providers.errors_map import body_text
from sage_bridge.providers.http_pool import HTTPPool

logger = logging.getLogger(__name__)


def _package_version() -> str:
    try:
        return importlib.metadata.version("sage-model-bridge")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree that was not installed
        return "dev"


DEFAULT_BASE_URL = "https://api.openai.com/v1"
USER_AGENT = f"sage-model-bridge/{_package_version()}"

# Concurrent connections to one upstream host. Requests beyond it wait for a free connection,
# so it is set well above the concurrency a single bridge serves.
_CONNECTIONS_PER_HOST = 512
_KEEPALIVE_SECONDS = 30.0
_DONE = b"[DONE]"


class OpenAIStatusError(Exception):
    """An HTTP error status from the server, with its decoded body and headers."""

    def __init__(self, status: int, body: object, headers: Mapping[str, str]) -> None:
        self.status = status
        self.body = body
        self.headers = dict(headers)
        self.message = body_text(body) or f"HTTP {status}"
        super().__init__(self.message)


class OpenAIStreamError(Exception):
    """An error object that the server sent as a data event in the middle of a stream."""

    def __init__(self, body: object) -> None:
        self.body = body
        self.message = body_text(body) or "an error occurred during streaming"
        super().__init__(self.message)


class OpenAIResponseError(Exception):
    """A response body that is not the JSON the Chat Completions API defines."""


def client_timeout(config: OpenAIProviderConfig) -> aiohttp.ClientTimeout:
    """Return the per-socket timeouts of `config`, with no limit on a whole stream."""
    return aiohttp.ClientTimeout(total=None, sock_connect=config.connect_timeout, sock_read=config.read_timeout)


def request_headers(config: OpenAIProviderConfig, key: str) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", "Accept": "application/json",
               "User-Agent": USER_AGENT}
    if config.organization:
        headers["OpenAI-Organization"] = config.organization
    if config.project:
        headers["OpenAI-Project"] = config.project
    return headers


class OpenAIHTTPClient:
    """POSTs to one server's /chat/completions: non-streamed requests through an HTTPPool,
    streams over a pooled aiohttp session.

    The session is created on first use, inside the running event loop, because aiohttp binds
    a session to the loop that created it.
    """

    def __init__(self, config: OpenAIProviderConfig, key: str) -> None:
        self._url = (config.base_url or DEFAULT_BASE_URL).rstrip("/") + "/chat/completions"
        self._headers = request_headers(config, key)
        self._timeout = client_timeout(config)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: HTTPPool | None = None
        self._config = config

    async def complete(self, body: dict[str, Any]) -> tuple[dict[str, Any], CIMultiDictProxy[str]]:
        """Send a non-streamed request; return the decoded completion and the response headers."""
        reply = await self._json_pool().post(_encode(body))
        if not _is_success(reply.status):
            raise OpenAIStatusError(reply.status, _decode_error_body(reply.body), reply.headers)
        return _decode_object(reply.body), reply.headers

    async def open_stream(self, body: dict[str, Any]) -> aiohttp.ClientResponse:
        """Send a streamed request and return the response once its headers arrived.

        The caller reads it with `stream_chunks` and must release it, which also closes the
        connection when the stream was not read to its end.
        """
        session = self._session_for_loop()
        response = await session.post(self._url, data=_encode(body), headers=self._headers, allow_redirects=False)
        if not _is_success(response.status):
            try:
                payload = await response.read()
            finally:
                response.release()
            raise OpenAIStatusError(response.status, _decode_error_body(payload), response.headers)
        return response

    async def aclose(self) -> None:
        if self._pool is not None:
            self._pool.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _json_pool(self) -> HTTPPool:
        if self._pool is None:
            # Built on first use, so that a bad base_url fails the request that uses it.
            self._pool = HTTPPool(self._url, self._headers, connect_timeout=self._config.connect_timeout,
                                  read_timeout=self._config.read_timeout, max_connections=_CONNECTIONS_PER_HOST,
                                  keepalive_seconds=_KEEPALIVE_SECONDS)
        return self._pool

    def _session_for_loop(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop:
            if self._session is not None:
                # The old loop is gone (tests run one loop each), so its session cannot be
                # closed from here; its connections closed with that loop.
                logger.debug("creating a new HTTP session for %s in another event loop", self._url)
            connector = aiohttp.TCPConnector(
                limit=0, limit_per_host=_CONNECTIONS_PER_HOST, keepalive_timeout=_KEEPALIVE_SECONDS
            )
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, raise_for_status=False, auto_decompress=True
            )
            self._loop = loop
        return self._session


async def stream_chunks(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """Yield the decoded data objects of an SSE response, up to `data: [DONE]`.

    After [DONE] the body is still read to its end, so that the connection can go back to
    the pool. A data object with an `error` member raises OpenAIStreamError.
    """
    decoder = SSEDecoder()
    done = False
    async for block in response.content.iter_any():
        if done:
            continue
        for event, data in decoder.feed(block):
            if data.startswith(_DONE):
                done = True
                break
            chunk = _stream_object(event, data)
            if chunk is not None:
                yield chunk


def _stream_object(event: str | None, data: bytes) -> dict[str, Any] | None:
    if event is not None and event != "error":
        # Chat Completions streams send data-only events; named ones belong to other APIs.
        logger.debug("ignoring a server-sent event named %r in a chat completion stream", event)
        return None
    chunk = _decode_object(data)
    if chunk.get("error"):
        raise OpenAIStreamError(chunk["error"])
    return chunk


class SSEDecoder:
    """Split a server-sent event stream into (event name, data) pairs.

    Lines end in LF or CRLF. Comment lines (starting with a colon) and the `id` and `retry`
    fields are skipped. An event that the stream ends without a blank line after is dropped, as
    the SSE specification requires.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []
        self._event: str | None = None

    def feed(self, block: bytes) -> list[tuple[str | None, bytes]]:
        *lines, self._buffer = (self._buffer + block).split(b"\n")
        events: list[tuple[str | None, bytes]] = []
        for raw_line in lines:
            line = raw_line.rstrip(b"\r")
            if not line:
                if self._data:
                    events.append((self._event, b"\n".join(self._data)))
                self._data = []
                self._event = None
            elif not line.startswith(b":"):
                self._field(line)
        return events

    def _field(self, line: bytes) -> None:
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")


def _is_success(status: int) -> bool:
    # A redirect is an error as well, as in the SDK: following one would resend the request
    # (and its key) to another URL.
    return 200 <= status < 300


def _encode(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body)


def _decode_object(payload: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise OpenAIResponseError(f"the response is not valid JSON ({exc}): {_preview(payload)}") from None
    if not isinstance(value, dict):
        raise OpenAIResponseError(f"the response is not a JSON object: {_preview(payload)}")
    return value


def _decode_error_body(payload: bytes) -> object:
    """Return the JSON of an error response, or its text when it is not JSON (a proxy's page)."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload.decode("utf-8", "replace")


def _preview(payload: bytes) -> str:
    return payload[:200].decode("utf-8", "replace")
