"""A keep-alive HTTP/1.1 connection pool for JSON POSTs to one upstream URL, parsed by httptools.

The chat path sends one small POST per request and reads one JSON response. On the benchmark
mock, aiohttp's client used 77 to 92 microseconds of CPU per request and this pool 39, because
aiohttp builds request objects, cookie and redirect state and a timer per read. So non-streamed
chat requests use this pool: one pre-built request head, httptools' C parser, and one timer per
request. Streams still go through aiohttp (openai_http), whose SSE reading they need.

Failures are raised as aiohttp's exception classes, so one rule table (openai_errors)
classifies both paths.
"""

from __future__ import annotations

import asyncio
import collections
import os
import ssl
import zlib
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import aiohttp
import httptools
from multidict import CIMultiDict, CIMultiDictProxy

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Target:
    """The host, port and path the pool connects to, and the Host header it sends."""

    scheme: str
    host: str
    port: int
    path: str  # with the query, as it goes on the request line
    host_header: str

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise aiohttp.InvalidUrlClientError(url, "use an http:// or https:// URL with a host")
        try:
            port = parts.port or _DEFAULT_PORTS[parts.scheme]
        except ValueError:
            raise aiohttp.InvalidUrlClientError(url, "the port is not a number from 1 to 65535") from None
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.netloc.rpartition("@")[2]  # credentials in the URL are never sent
        return cls(parts.scheme, parts.hostname, port, path, host)


class HTTPPool:
    """POSTs bodies to one URL over reused connections.

    A pool belongs to the event loop that first uses it: connections cannot move between loops,
    so on another loop it starts afresh and drops the old loop's connections.
    """

    def __init__(self, url: str, headers: dict[str, str], *, connect_timeout: float, read_timeout: float,
                 max_connections: int = 512, keepalive_seconds: float = 30.0) -> None:
        self.target = Target.parse(url)
        fields = {"Host": self.target.host_header, "Accept-Encoding": "gzip, deflate", **headers}
        head = f"POST {self.target.path} HTTP/1.1\r\n" + "".join(f"{name}: {value}\r\n" for name, value in fields.items())
        self._head = head.encode("latin-1")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.keepalive_seconds = keepalive_seconds
        self._max_connections = max_connections
        self._idle: collections.deque[_Connection] = collections.deque()
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tls: ssl.SSLContext | None = None
        self.connections_opened = 0  # for tests and status: how often the pool had to connect

    async def post(self, body: bytes) -> Reply:
        """Send `body` and return the whole reply; raise aiohttp's exception classes on failure."""
        slots = self._slots_for_loop()
        async with slots:
            connection = await self._checkout()
            try:
                reply = await connection.exchange(self._head + b"Content-Length: %d\r\n\r\n" % len(body) + body,
                                                  self.read_timeout)
            except BaseException:
                connection.close()
                raise
            self._checkin(connection)
            return reply

    def close(self) -> None:
        """Close every idle connection; connections in use close when their exchange ends."""
        while self._idle:
            self._idle.pop().close()

    def _slots_for_loop(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._loop is not loop:
            self._idle.clear()  # connections of a previous loop died with it
            self._slots = asyncio.Semaphore(self._max_connections)
            self._loop = loop
        return self._slots

    async def _checkout(self) -> _Connection:
        now = asyncio.get_running_loop().time()
        while self._idle:
            connection = self._idle.pop()  # the most recently used is the least likely to be closed
            if connection.reusable(now, self.keepalive_seconds):
                return connection
            connection.close()
        return await self._connect()

    def _checkin(self, connection: _Connection) -> None:
        if connection.keep_alive:
            connection.idle_since = asyncio.get_running_loop().time()
            self._idle.append(connection)
        else:
            connection.close()

    def _tls_context(self) -> ssl.SSLContext:
        # Built once: loading the system's CA certificates took about 17 ms per context.
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        target = self.target
        tls = self._tls_context() if target.scheme == "https" else None
        try:
            async with asyncio.timeout(self.connect_timeout):
                transport, connection = await loop.create_connection(
                    _Connection, target.host, target.port, ssl=tls, server_hostname=target.host if tls else None
                )
        except TimeoutError:
            raise aiohttp.ConnectionTimeoutError(
                f"connecting to {target.host}:{target.port} took longer than {self.connect_timeout} s"
            ) from None
        except ssl.SSLError as exc:
            # An SSL error's errno carries no useful meaning, so the message is the library's text.
            raise aiohttp.ClientOSError(f"TLS with {target.host}:{target.port} failed: {exc}") from exc
        except OSError as exc:
            # ClientOSError prints the errno itself, so the message carries only its meaning.
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise aiohttp.ClientOSError(exc.errno, f"cannot connect to {target.host}:{target.port}: {reason}") from exc
        # uvloop may call connection_made after create_connection returns; the transport is known now.
        connection.attach(transport)
        self.connections_opened += 1
        return connection


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection and the exchange in flight on it, if any."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Reply] | None = None
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._received = False  # whether any byte of the current response arrived
        self._last_data = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._headers_done = False
        self._lost = False
        self.keep_alive = False
        self.idle_since = 0.0

    def reusable(self, now: float, keepalive_seconds: float) -> bool:
        transport = self._transport
        return (not self._lost and transport is not None and not transport.is_closing()
                and now - self.idle_since < keepalive_seconds)

    async def exchange(self, request: bytes, read_timeout: float) -> Reply:
        assert self._transport is not None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Reply] = loop.create_future()
        self._waiter = waiter
        self._headers, self._body, self._received, self.keep_alive = [], [], False, False
        self._headers_done = False
        self._last_data = loop.time()
        # One timer per exchange: when it fires, it re-arms itself if data arrived meanwhile,
        # so the timeout is the longest silence, without rescheduling on every read.
        self._timer = loop.call_at(self._last_data + read_timeout, self._check_silence, read_timeout)
        try:
            self._transport.write(request)
            return await waiter
        finally:
            self._timer.cancel()
            self._timer = None
            self._waiter = None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # asyncio.Protocol

    def attach(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports provide asyncio.Transport's methods without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.attach(transport)

    def data_received(self, data: bytes) -> None:
        self._received = True
        if self._waiter is None:
            # Bytes outside any exchange: the connection is out of step, so it must not be reused.
            self._lost = True
            self.close()
            return
        self._last_data = self._waiter.get_loop().time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(aiohttp.ClientPayloadError(f"the upstream sent a malformed HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._headers_done and self._ends_at_close():
            self.on_message_complete()  # a body without a length ends when the connection does
        elif self._received:
            self._fail(aiohttp.ClientPayloadError("the upstream closed the connection in the middle of the response"))
        else:
            self._fail(aiohttp.ServerDisconnectedError("the upstream closed the connection without a response"))

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        headers = CIMultiDictProxy(CIMultiDict(self._headers))
        self.keep_alive = self._parser.should_keep_alive()
        try:
            body = _decoded(b"".join(self._body), headers.get("Content-Encoding"))
        except (zlib.error, aiohttp.ClientPayloadError) as exc:
            self.keep_alive = False
            waiter.set_exception(exc if isinstance(exc, aiohttp.ClientPayloadError)
                                 else aiohttp.ClientPayloadError(f"the compressed response is corrupt: {exc}"))
            return
        waiter.set_result(Reply(self._parser.get_status_code(), headers, body))

    def _check_silence(self, read_timeout: float) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        loop = waiter.get_loop()
        deadline = self._last_data + read_timeout
        if loop.time() < deadline:
            self._timer = loop.call_at(deadline, self._check_silence, read_timeout)
            return
        self._fail(aiohttp.SocketTimeoutError(f"the upstream sent nothing for {read_timeout} s"))
        self.close()

    def _ends_at_close(self) -> bool:
        names = {name.lower() for name, _ in self._headers}
        return "content-length" not in names and "transfer-encoding" not in names

    def _fail(self, exc: Exception) -> None:
        self.keep_alive = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)


def _decoded(body: bytes, encoding: str | None) -> bytes:
    if not encoding or encoding == "identity":
        return body
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompress(body, wbits=zlib.MAX_WBITS | 16)
    if encoding == "deflate":
        # Servers send "deflate" both with and without the zlib header.
        try:
            return zlib.decompress(body)
        except zlib.error:
            return zlib.decompress(body, wbits=-zlib.MAX_WBITS)
    raise aiohttp.ClientPayloadError(f"the upstream used the content-encoding {encoding!r}, which the bridge "
                                     "did not ask for")
