"""bridged: load the config, open the Unix socket, serve until SIGTERM or SIGINT, then drain."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from sage_bridge.config.loader import load_config
from sage_bridge.config.settings import DaemonSettings, config_path_from, resolve_settings
from sage_bridge.errors import ConfigError
from sage_bridge.graph.compiler import compile_graph
from sage_bridge.graph.model import RoutingGraph
from sage_bridge.logs import configure_logging
from sage_bridge.runtime import DaemonState, Runtime
from sage_bridge.server.app import build_app
from sage_bridge.server.unix_socket import SocketInUse, apply_mode, prepare_socket_path, remove_socket

log = logging.getLogger("sage_bridge.daemon")


def parse_flags(argv: list[str] | None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="bridged", description="Serve an OpenAI-compatible API on a Unix socket.")
    parser.add_argument("--config", help="bridge.yaml to load (default: ./bridge.yaml, else ~/.config/sage-bridge/bridge.yaml)")
    parser.add_argument("--socket", help="Unix socket path to serve on (default: $XDG_RUNTIME_DIR/sage-bridge/bridge.sock)")
    parser.add_argument("--state-dir", help="directory for the ledger and other state (default: ~/.local/state/sage-bridge)")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper)
    parser.add_argument("--log-format", choices=["text", "json"])
    return vars(parser.parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    flags = parse_flags(argv)
    configure_logging(flags.get("log_level") or os.environ.get("SAGE_BRIDGE_LOG_LEVEL") or "INFO")
    config_path = config_path_from(flags)
    try:
        graph = compile_graph(load_config(config_path))
    except ConfigError as exc:
        log.error("cannot start: %s has errors:\n  %s", config_path, "\n  ".join(exc.problems))
        return 2
    settings = resolve_settings({**flags, "config": config_path}, graph.loaded.config.server)
    configure_logging(settings.log_level)
    for warning in graph.warnings:
        log.warning("%s", warning)
    try:
        asyncio.run(serve(settings, graph))
    except SocketInUse as exc:
        log.error("cannot start: %s", exc)
        return 1
    return 0


async def serve(settings: DaemonSettings, graph: RoutingGraph) -> None:
    runtime = await Runtime.start(settings, graph)
    server = graph.loaded.config.server
    runner = web.AppRunner(
        build_app(runtime),
        handler_cancellation=True,  # a client that disconnects cancels its request and frees the model
        shutdown_timeout=server.shutdown_grace_seconds,
        access_log=None,
    )
    await runner.setup()
    path = settings.socket_path
    await _listen(runner, path, server.socket_mode)
    runtime.state = DaemonState.SERVING
    log.info("serving %d routes on %s (pid %d, config %s)", len(graph.routes), path, os.getpid(), graph.loaded.path)

    await _wait_for_stop_signal()

    runtime.state = DaemonState.DRAINING
    log.info("draining: %d requests in flight, grace period %.0f s", runtime.in_flight, server.shutdown_grace_seconds)
    remove_socket(path)
    await runner.cleanup()
    await runtime.close()
    runtime.state = DaemonState.STOPPED
    log.info("stopped")


async def _listen(runner: web.AppRunner, path: Path, mode: str) -> None:
    prepare_socket_path(path)
    # The umask keeps the socket private from the moment it exists, before chmod sets the mode.
    previous = os.umask(0o177)
    try:
        await web.UnixSite(runner, str(path)).start()
    finally:
        os.umask(previous)
    apply_mode(path, mode)


async def _wait_for_stop_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(signum)


if __name__ == "__main__":
    sys.exit(main())
