"""Health and the admin API that bridgectl reads. Never returns a secret."""

from __future__ import annotations

import os
import time
from typing import Any

from aiohttp import web

from sage_bridge.graph.model import Deployment, Route, RoutingGraph
from sage_bridge.server.keys import RUNTIME


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
    })


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


def describe_graph(graph: RoutingGraph) -> dict[str, Any]:
    return {"routes": [_route(route) for route in graph.routes.values()]}
