"""The keep-alive HTTP/1.1 pool of the chat path, against small servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gzip
import shutil
import ssl
import subprocess
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from sage_bridge.errors import ErrorKind
from sage_bridge.providers.http_pool import HTTPPool, Reply, Target
from sage_bridge.providers.openai_errors import classify_http_error
from tests.app_env import serve_post

RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Upstream:
    """An aiohttp server that responds to every POST with what `reply` builds and records each peer."""

    def __init__(self) -> None:
        self.peers: list[int] = []
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.reply: Callable[[], web.StreamResponse] = lambda: web.json_response({"ok": True})
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.peers.append(peer[1] if peer else 0)
        self.bodies.append(await request.read())
        self.headers.append(dict(request.headers))
        return self.reply()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    server = Upstream()
    async with serve_post("/v1/chat/completions", server.handle) as origin:
        server.url = f"{origin}/v1/chat/completions"
        yield server


async def raw_server(handler: RawHandler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/chat"


async def post_once(handler: RawHandler, read_timeout: float = 5.0) -> Reply:
    """Post one body to a raw server running `handler`, and close both afterwards."""
    server, url = await raw_server(handler)
    pool = make_pool(url, read_timeout)
    try:
        return await pool.post(b"{}")
    finally:
        pool.close()
        server.close()


def make_pool(url: str, read_timeout: float = 5.0) -> HTTPPool:
    return HTTPPool(url, {"Authorization": "Bearer sk-test", "Content-Type": "application/json"},
                    connect_timeout=2.0, read_timeout=read_timeout)


async def test_requests_reuse_one_connection(upstream: Upstream) -> None:
    pool = make_pool(upstream.url)

    replies = [await pool.post(b'{"n": %d}' % n) for n in range(3)]
    pool.close()

    assert [reply.status for reply in replies] == [200, 200, 200]
    assert len(set(upstream.peers)) == 1
    assert pool.connections_opened == 1
    assert upstream.bodies == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']


async def test_request_head_carries_headers_and_length(upstream: Upstream) -> None:
    pool = make_pool(upstream.url)

    await pool.post(b"{}")
    pool.close()

    sent = upstream.headers[0]
    assert sent["Authorization"] == "Bearer sk-test"
    assert sent["Content-Length"] == "2"
    assert sent["Host"] == upstream.url.split("/")[2]


async def test_concurrent_requests_open_parallel_connections(upstream: Upstream) -> None:
    pool = make_pool(upstream.url)

    replies = await asyncio.gather(*(pool.post(b"{}") for _ in range(5)))
    await pool.post(b"{}")
    pool.close()

    assert all(reply.status == 200 for reply in replies)
    assert pool.connections_opened == 5  # the sixth request reused one of them


async def test_error_status_and_headers_are_returned(upstream: Upstream) -> None:
    upstream.reply = lambda: web.json_response({"error": {"message": "slow down"}}, status=429,
                                               headers={"Retry-After": "3"})
    pool = make_pool(upstream.url)

    reply = await pool.post(b"{}")
    pool.close()

    assert reply.status == 429
    assert reply.headers["retry-after"] == "3"
    assert b"slow down" in reply.body


async def test_chunked_body_is_joined() -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"6\r\n{\"a\": \r\n5\r\n\"long\r\n7\r\n text\"}\r\n0\r\n\r\n")
        await writer.drain()

    reply = await post_once(chunked)

    assert reply.body == b'{"a": "long text"}'


@pytest.mark.parametrize("encoding, compress", [
    ("gzip", gzip.compress),
    ("deflate", zlib.compress),
    ("deflate", lambda data: zlib.compress(data)[2:-4]),  # raw deflate, without the zlib header
])
async def test_compressed_bodies_are_decoded(upstream: Upstream, encoding: str, compress: Callable[[bytes], bytes]) -> None:
    upstream.reply = lambda: web.Response(body=compress(b'{"text": "hello"}'),
                                          headers={"Content-Encoding": encoding, "Content-Type": "application/json"})
    pool = make_pool(upstream.url)

    reply = await pool.post(b"{}")
    pool.close()

    assert reply.body == b'{"text": "hello"}'


async def test_unknown_encoding_is_a_cut_response(upstream: Upstream) -> None:
    upstream.reply = lambda: web.Response(body=b"xx", headers={"Content-Encoding": "br"})
    pool = make_pool(upstream.url)

    with pytest.raises(aiohttp.ClientPayloadError, match="'br'"):
        await pool.post(b"{}")
    pool.close()


async def test_connection_close_is_not_reused(upstream: Upstream) -> None:
    upstream.reply = lambda: web.json_response({"ok": True}, headers={"Connection": "close"})
    pool = make_pool(upstream.url)

    await pool.post(b"{}")
    await pool.post(b"{}")
    pool.close()

    assert pool.connections_opened == 2


async def test_server_closing_an_idle_connection_is_noticed() -> None:
    async def answer_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A keep-alive response, then the server drops the idle connection, as on its idle timeout.
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()

    server, url = await raw_server(answer_then_close)
    pool = make_pool(url)
    await pool.post(b"{}")
    idle = pool._idle[0]
    for _ in range(200):  # wait for the close to reach the client side
        if not idle.reusable(asyncio.get_running_loop().time(), pool.keepalive_seconds):
            break
        await asyncio.sleep(0.01)

    reply = await pool.post(b"{}")
    pool.close()
    server.close()

    assert reply.status == 200
    assert pool.connections_opened == 2


async def test_disconnect_without_response_is_a_connection_failure() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    with pytest.raises(aiohttp.ServerDisconnectedError) as caught:
        await post_once(hang_up)

    failure = classify_http_error(caught.value)
    assert failure is not None
    assert failure.kind is ErrorKind.CONNECTION


async def test_response_cut_midway_is_a_payload_error() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"partial\"")
        await writer.drain()
        writer.close()

    with pytest.raises(aiohttp.ClientPayloadError, match="middle of the response"):
        await post_once(cut)


async def test_body_ended_by_close_is_complete() -> None:
    async def http10(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"whole\": true}")
        await writer.drain()
        writer.close()

    reply = await post_once(http10)

    assert reply.body == b'{"whole": true}'


async def test_malformed_response_is_a_payload_error() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()

    with pytest.raises(aiohttp.ClientPayloadError, match="malformed"):
        await post_once(garbage)


async def test_silent_upstream_times_out() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(30)

    with pytest.raises(aiohttp.SocketTimeoutError) as caught:
        await post_once(silent, read_timeout=0.2)

    failure = classify_http_error(caught.value)
    assert failure is not None
    assert failure.kind is ErrorKind.TIMEOUT


async def test_refused_connection_is_a_connection_failure() -> None:
    server, url = await raw_server(lambda reader, writer: asyncio.sleep(0))
    server.close()
    await server.wait_closed()
    pool = make_pool(url)

    with pytest.raises(aiohttp.ClientOSError) as caught:
        await pool.post(b"{}")

    failure = classify_http_error(caught.value)
    assert failure is not None
    assert failure.kind is ErrorKind.CONNECTION
    assert str(caught.value).count("Errno") == 1
    assert str(caught.value).endswith(": Connection refused")


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "http:///nohost", "http://127.0.0.1:99999/x"])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(aiohttp.InvalidUrlClientError):
        Target.parse(url)


def test_target_keeps_path_query_and_host_port() -> None:
    target = Target.parse("https://user:secret@api.example.test:8443/v1/chat?x=1")

    assert target.host == "api.example.test"
    assert target.port == 8443
    assert target.path == "/v1/chat?x=1"
    assert target.host_header == "api.example.test:8443"
    assert target.scheme == "https"


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed; it makes the test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
    return cert, key


async def test_https_checks_the_certificate(self_signed: tuple[Path, Path]) -> None:
    # A self-signed certificate is not in the system's trust store, so the handshake must fail.
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(*self_signed)
    server = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    pool = make_pool(f"https://127.0.0.1:{port}/chat")

    for _ in range(2):
        with pytest.raises(aiohttp.ClientOSError, match="certificate verify failed") as caught:
            await pool.post(b"{}")
    first_context = pool._tls
    server.close()

    failure = classify_http_error(caught.value)
    assert failure is not None
    assert failure.kind is ErrorKind.CONNECTION
    assert first_context is not None
    assert pool._tls is first_context  # one TLS context serves every connection
