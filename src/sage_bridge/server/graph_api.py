"""GET /admin/graph: the live routing graph as trees, with each deployment's run-time state."""

from __future__ import annotations

from aiohttp import web

from sage_bridge.graph.describe import describe_routes
from sage_bridge.limits.cooldown import BreakerState
from sage_bridge.server.keys import RUNTIME

_STATE_NAMES = {BreakerState.OPEN: "cooling_down", BreakerState.HALF_OPEN: "probing"}


async def graph(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    live = {
        status.deployment: _STATE_NAMES[status.state]
        for status in runtime.registries.cooldowns.snapshot()
        if status.state in _STATE_NAMES
    }
    return web.json_response({"routes": describe_routes(runtime.graph, live)})
