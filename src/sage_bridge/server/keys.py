"""Typed keys for values stored on the aiohttp application and requests."""

from __future__ import annotations

from aiohttp import web

from sage_bridge.metrics import Metrics
from sage_bridge.routing.context import RequestContext
from sage_bridge.runtime import Runtime
from sage_bridge.server.identity import CALLER

__all__ = ["CALLER", "METRICS", "REQUEST_CONTEXT", "REQUEST_ID", "RUNTIME"]

RUNTIME = web.AppKey("runtime", Runtime)
METRICS = web.AppKey("metrics", Metrics)
REQUEST_ID = web.RequestKey("request_id", str)
REQUEST_CONTEXT = web.RequestKey("request_context", RequestContext)  # set once the handler has one
