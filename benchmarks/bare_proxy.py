"""The floor for the bridge: a bare aiohttp pass-through proxy on a Unix socket.

It forwards every request to the upstream with one shared ClientSession and copies the
response back, streaming SSE bodies chunk by chunk as they arrive. It parses nothing, so its
cost is the HTTP server and client work that any Python proxy pays.
Run it alone: `python -m benchmarks.bare_proxy --socket /tmp/bare.sock --upstream http://127.0.0.1:8001`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
from aiohttp import web

UPSTREAM = web.AppKey("upstream", str)
SESSION = web.AppKey("session", aiohttp.ClientSession)
# Hop-by-hop headers, and the ones aiohttp recomputes for the forwarded body.
_DROPPED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive"})


async def forward(request: web.Request) -> web.StreamResponse:
    session = request.app[SESSION]
    url = request.app[UPSTREAM] + request.rel_url.raw_path_qs
    headers = {name: value for name, value in request.headers.items() if name.lower() not in _DROPPED_HEADERS}
    body = await request.read()

    async with session.request(request.method, url, data=body, headers=headers) as upstream:
        reply_headers = {
            name: value for name, value in upstream.headers.items() if name.lower() not in _DROPPED_HEADERS
        }
        if upstream.content_type != "text/event-stream":
            return web.Response(status=upstream.status, body=await upstream.read(), headers=reply_headers)

        response = web.StreamResponse(status=upstream.status, headers=reply_headers)
        await response.prepare(request)
        async for data in upstream.content.iter_any():
            await response.write(data)
        await response.write_eof()
        return response


async def _open_session(app: web.Application) -> None:
    # No connection cap, as a proxy in front of one upstream would be configured.
    app[SESSION] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)


async def _close_session(app: web.Application) -> None:
    await app[SESSION].close()


def build_app(upstream: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    app.router.add_route("*", "/{tail:.*}", forward)
    app.on_startup.append(_open_session)
    app.on_cleanup.append(_close_session)
    return app


async def serve(socket_path: Path, upstream: str, stop_after: float) -> None:
    runner = web.AppRunner(build_app(upstream), access_log=None, handler_cancellation=True)
    await runner.setup()
    socket_path.unlink(missing_ok=True)
    await web.UnixSite(runner, str(socket_path)).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        # A forgotten proxy must not run forever: it exits after stop_after seconds.
        await asyncio.wait_for(stop.wait(), timeout=stop_after)
    except TimeoutError:
        pass
    await runner.cleanup()
    socket_path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Forward HTTP from a Unix socket to an upstream, parsing nothing.")
    parser.add_argument("--socket", required=True, type=Path, help="Unix socket path to listen on")
    parser.add_argument("--upstream", required=True, help="base URL to forward to, e.g. http://127.0.0.1:8001")
    parser.add_argument("--stop-after", type=float, default=4 * 3600.0, help="seconds after which the proxy exits")
    args = parser.parse_args(argv)
    if not args.upstream.startswith(("http://127.0.0.1", "http://localhost", "http://[::1]")):
        parser.error(f"--upstream {args.upstream}: the bare proxy forwards to loopback only")
    os.umask(0o177)  # the socket is private to this user, like the bridge's
    asyncio.run(serve(args.socket, args.upstream, args.stop_after))
    return 0


if __name__ == "__main__":
    sys.exit(main())
