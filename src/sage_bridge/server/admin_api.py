"""Health and the admin API that bridgectl uses: status and reload. Never returns a secret."""

from __future__ import annotations

import os
import time
from typing import Any

from aiohttp import web

from sage_bridge.graph.model import Deployment, Route
from sage_bridge.reload import ReloadCoordinator
from sage_bridge.runtime import DaemonState
from sage_bridge.server.keys import RUNTIME
from sage_bridge.server.state_json import runtime_state

RELOADER = web.AppKey("reloader", ReloadCoordinator)


async def healthz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    return web.json_response({"status": "ok", "state": runtime.state.value})


async def status(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    graph = runtime.graph
    return web.json_response({
        "pid": os.getpid(),
        "state": runtime.state.value,
        "uptime_seconds": round(time.time() - runtime.started_at, 1),
        "config": {
            "path": str(graph.loaded.path),
            "files": [str(file) for file in graph.loaded.files],
            "sha256": graph.loaded.digest,
            "loaded_at": runtime.loaded_at,
            "warnings": list(graph.warnings),
        },
        "socket": str(runtime.settings.socket_path),
        "in_flight": runtime.in_flight,
        "routes": [_route(route) for route in graph.routes.values()],
        "deployments": [_deployment(deployment) for deployment in graph.deployments.values()],
        "terminal": graph.terminal.name if graph.terminal else None,
        "reload": _last_reload(request.app.get(RELOADER)),
        "retiring_configs": [
            {"sha256": retired.loaded.digest, "in_flight": requests} for retired, requests in runtime.retired_graphs()
        ],
        **runtime_state(runtime),
    })


def enable_reload(app: web.Application, reloader: ReloadCoordinator) -> None:
    """Serve POST /admin/reload from `reloader`, and show its last outcome in the status."""
    app[RELOADER] = reloader
    app.router.add_post("/admin/reload", reload)


async def reload(request: web.Request) -> web.Response:
    """Reload the config and return the outcome once the reload has finished."""
    runtime = request.app[RUNTIME]
    if runtime.state not in (DaemonState.SERVING, DaemonState.RELOADING):
        body = {"error": {"message": f"bridged is {runtime.state.value} and does not reload now", "type": "server_error",
                          "param": None, "code": "not_serving"}}
        return web.json_response(body, status=503)
    report = await request.app[RELOADER].request("bridgectl reload")
    return web.json_response(report.to_json())


def _last_reload(reloader: ReloadCoordinator | None) -> dict[str, Any] | None:
    """Return the last reload's outcome as `last_outcome`, with its time, errors and changes."""
    if reloader is None or reloader.last is None:
        return None
    data = reloader.last.to_json()
    return {"last_outcome": data.pop("outcome"), **data}


def _route(route: Route) -> dict[str, Any]:
    return {
        "name": route.name,
        "strategy": route.strategy,
        "targets": [target.deployment.name for target in route.targets],
        "terminal": route.terminal.name if route.terminal else None,
    }


def _deployment(deployment: Deployment) -> dict[str, Any]:
    return {
        "name": deployment.name,
        "provider": deployment.provider,
        "type": deployment.provider_type,
        "model": deployment.upstream_model,
        "state": "enabled" if deployment.enabled else "disabled",
        "disabled_reason": deployment.disabled_reason,
    }
