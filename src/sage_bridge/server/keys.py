"""Typed keys for values stored on the aiohttp application and requests."""

from __future__ import annotations

from aiohttp import web

from sage_bridge.runtime import Runtime

RUNTIME = web.AppKey("runtime", Runtime)
REQUEST_ID = "sage_bridge.request_id"
