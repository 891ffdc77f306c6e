"""bridged: load the config, open the Unix socket, serve and reload until SIGTERM or SIGINT, then drain."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from aiohttp import web

from sage_bridge.config.loader import load_config
from sage_bridge.config.settings import DaemonSettings, config_path_from, resolve_settings
from sage_bridge.errors import ConfigError
from sage_bridge.graph.compiler import compile_graph
from sage_bridge.graph.model import RoutingGraph
from sage_bridge.logs import configure_logging
from sage_bridge.providers.pool import PrepareFailed
from sage_bridge.reload import ReloadCoordinator
from sage_bridge.runtime import DaemonState, Runtime
from sage_bridge.server import admin_api
from sage_bridge.server.app import build_app
from sage_bridge.server.keys import METRICS
from sage_bridge.server.listeners import ListenerError, listen_tcp, listen_unix
from sage_bridge.server.unix_socket import SocketInUse, remove_socket

log = logging.getLogger("sage_bridge.daemon")


def parse_flags(argv: list[str] | None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="bridged", description="Serve an OpenAI-compatible API on a Unix socket.")
    parser.add_argument("--config", help="bridge.yaml to load (default: ./bridge.yaml, else ~/.config/sage-bridge/bridge.yaml)")
    parser.add_argument("--socket", help="Unix socket path to serve on (default: $XDG_RUNTIME_DIR/sage-bridge/bridge.sock)")
    parser.add_argument("--state-dir", help="directory for the ledger and other state (default: ~/.local/state/sage-bridge)")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper)
    parser.add_argument("--log-format", choices=["text", "json"])
    parser.add_argument("--no-watch", action="store_true",
                        help="do not reload when a config file changes; reload only on SIGHUP or `bridgectl reload`")
    return vars(parser.parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    flags = parse_flags(argv)
    configure_logging(
        flags.get("log_level") or os.environ.get("SAGE_BRIDGE_LOG_LEVEL") or "INFO",
        flags.get("log_format") or os.environ.get("SAGE_BRIDGE_LOG_FORMAT") or "text",
    )
    config_path = config_path_from(flags)
    try:
        graph = compile_graph(load_config(config_path))
    except ConfigError as exc:
        log.error("cannot start: %s has errors:\n  %s", config_path, "\n  ".join(exc.problems))
        return 2
    settings = resolve_settings({**flags, "config": config_path}, graph.loaded.config.server)
    configure_logging(settings.log_level, settings.log_format)
    for warning in graph.warnings:
        log.warning("%s", warning)
    try:
        asyncio.run(serve(settings, graph, watch=not flags["no_watch"]), loop_factory=_event_loop_factory())
    except (SocketInUse, ListenerError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    except PrepareFailed as exc:
        log.error("cannot start: %s: %s", graph.loaded.where(("models", exc.deployment)), exc)
        return 2
    return 0


async def serve(settings: DaemonSettings, graph: RoutingGraph, watch: bool = True) -> None:
    runtime = await Runtime.start(settings, graph)
    signals = _Signals(asyncio.get_running_loop())
    reloader = ReloadCoordinator(runtime, settings.config)
    app = build_app(runtime)
    runtime.metrics = app[METRICS]
    admin_api.enable_reload(app, reloader)
    server = graph.loaded.config.server
    runner = web.AppRunner(
        app,
        handler_cancellation=True,  # a client that disconnects cancels its request and frees the model
        shutdown_timeout=server.shutdown_grace_seconds,
        access_log=None,
    )
    await runner.setup()
    if watch:
        # Watching starts before the socket opens, so an edit made as soon as it accepts is seen.
        reloader.watch()
    path = settings.socket_path
    try:
        await listen_unix(runner, path, server)
        await listen_tcp(runner, server, graph.loaded.config.clients)
    except BaseException:
        signals.remove()
        await _stop_unserved(runtime, reloader, runner)
        raise

    runtime.move_to(DaemonState.SERVING)
    reloader.start()
    signals.on_hangup(lambda: reloader.request("SIGHUP"))
    log.info("serving %d routes on %s (pid %d, config %s)", len(graph.routes), path, os.getpid(), graph.loaded.path)
    await signals.stop.wait()
    signals.remove()

    runtime.move_to(DaemonState.DRAINING)
    log.info("draining: requests in flight: %d, grace period %.0f s", runtime.in_flight, server.shutdown_grace_seconds)
    await reloader.close()
    remove_socket(path)
    await runner.cleanup()
    await runtime.close()
    runtime.move_to(DaemonState.STOPPED)
    log.info("stopped")


class _Signals:
    """SIGTERM and SIGINT stop the daemon, SIGHUP reloads it. The handlers are installed before
    the socket opens: a signal sent as soon as it accepts would otherwise meet the default
    action, which ends the process without a drain."""

    _STOP = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.stop = asyncio.Event()
        self._hangup: Callable[[], object] | None = None
        self._missed_hangup = False
        for signum in self._STOP:
            loop.add_signal_handler(signum, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._on_hangup)

    def on_hangup(self, action: Callable[[], object]) -> None:
        """Run `action` on each SIGHUP, and now if one came before this call."""
        self._hangup = action
        if self._missed_hangup:
            action()

    def remove(self) -> None:
        for signum in (*self._STOP, signal.SIGHUP):
            self._loop.remove_signal_handler(signum)

    def _on_hangup(self) -> None:
        if self._hangup is None:
            self._missed_hangup = True
        else:
            self._hangup()


async def _stop_unserved(runtime: Runtime, reloader: ReloadCoordinator, runner: web.AppRunner) -> None:
    """Release what a daemon that never opened its socket holds: the watch, models, the ledger."""
    await reloader.close()
    await runner.cleanup()
    await runtime.close()
    runtime.move_to(DaemonState.STOPPED)


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """Return uvloop's loop factory when uvloop is installed, because its transports cost less per
    request than asyncio's (docs/benchmarks.md). SAGE_BRIDGE_EVENT_LOOP=asyncio keeps the standard loop."""
    if os.environ.get("SAGE_BRIDGE_EVENT_LOOP", "uvloop") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


if __name__ == "__main__":
    sys.exit(main())
