"""Build the aiohttp application: routes, request ids, access control, and errors in OpenAI's shape."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from sage_bridge import ids, logs
from sage_bridge.errors import BridgeError, InvalidRequest
from sage_bridge.metrics import Metrics, Outcome
from sage_bridge.routing.context import RequestContext
from sage_bridge.runtime import Runtime
from sage_bridge.secrets import redact
from sage_bridge.server import admin_api, graph_api, identity, openai_api, usage_api
from sage_bridge.server.access import AccessGate
from sage_bridge.server.identity import Caller
from sage_bridge.server.keys import CALLER, METRICS, REQUEST_CONTEXT, REQUEST_ID, RUNTIME
from sage_bridge.server.wire import dumps

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ACCESS = web.AppKey("access", AccessGate)
_MAX_REQUEST_ID = 128
_API_PREFIX = "/v1/"


def build_app(runtime: Runtime, metrics: Metrics | None = None) -> web.Application:
    """Return the app serving `runtime`; pass `metrics` to keep a handle for reload counts."""
    app = web.Application(middlewares=[_serve], client_max_size=runtime.graph.loaded.config.server.max_body_bytes)
    app[RUNTIME] = runtime
    app[METRICS] = metrics if metrics is not None else Metrics(runtime)
    app[ACCESS] = AccessGate()
    app[ACCESS].policy(runtime.graph.loaded.config)  # warns about unknown groups and clients at start
    app.router.add_post("/v1/chat/completions", openai_api.chat_completions)
    app.router.add_post("/v1/embeddings", openai_api.embeddings)
    app.router.add_get("/v1/models", openai_api.list_models)
    app.router.add_get("/healthz", admin_api.healthz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/admin/status", admin_api.status)
    app.router.add_get("/admin/graph", graph_api.graph)
    app.router.add_get("/admin/usage", usage_api.usage)
    return app


@web.middleware
async def _serve(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request[REQUEST_ID] = _request_id(request)
    token = logs.REQUEST_ID.set(request_id)  # every log line of this request carries its id
    runtime = request.app[RUNTIME]
    counted = request.path.startswith(_API_PREFIX)  # status and metrics calls do not count themselves
    runtime.in_flight += counted
    try:
        response = await _answer(request, handler)
    finally:
        runtime.in_flight -= counted
        logs.REQUEST_ID.reset(token)
    if not response.prepared:
        response.headers["x-request-id"] = request_id
    return response


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Check access, run the handler, and turn whatever it raises into one logged error response."""
    started = time.perf_counter()
    try:
        request[CALLER] = _admit(request)
        response = await handler(request)
    except BridgeError as exc:
        _finish_refused(request, exc.status, exc.code or exc.error_type, exc.message, started)
        context = request.get(REQUEST_CONTEXT)
        headers = {**openai_api.bridge_headers(context), **exc.headers()} if context is not None else exc.headers()
        return _error_response(exc.status, exc.body(), headers)
    except web.HTTPException as exc:
        error = _http_error(exc)
        _finish_refused(request, exc.status, "http_error", exc.reason, started)
        return error
    except asyncio.CancelledError:
        _finish_cancelled(request, started)
        raise
    except ConnectionResetError:
        if not _client_gone(request):
            return _internal_error(request)
        _finish_cancelled(request, started)
        # Nothing reaches a client that is gone; aiohttp discards this response quietly.
        return web.Response(status=499)
    except Exception:
        return _internal_error(request)
    if not request.path.startswith(_API_PREFIX):
        log.debug("%s %s returned %d in %.1f ms", request.method, request.path, response.status, _ms_since(started))
    return response


def _internal_error(request: web.Request) -> web.Response:
    """Log the exception being handled with its traceback, and return a 500 in OpenAI's shape."""
    log.exception("request %s failed with an unexpected error", request[REQUEST_ID])
    _record(request, "error", "server_error")
    body = InvalidRequest("internal error in the bridge; the log has the details").body()
    body["error"]["type"] = "server_error"
    return _error_response(500, body, {})


def _admit(request: web.Request) -> Caller:
    config = request.app[RUNTIME].graph.loaded.config
    policy = request.app[ACCESS].policy(config)
    # Looked up through the module so that tests can substitute fake peer credentials.
    credentials = identity.peer_credentials(request)
    return policy.admit(request.path, credentials, request.headers.get("Authorization"))


async def _metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[METRICS].render(request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": content_type})


def _finish_refused(request: web.Request, status: int, code: str, message: str, started: float) -> None:
    """Log one line and count a request that got an error status."""
    ctx = _context(request)
    route = ctx.route.name if ctx is not None and ctx.route is not None else "-"
    attempts = ctx.attempts if ctx is not None else 0
    verb = "failed" if status >= 500 else "rejected"
    log.info(
        "request %s %s: %s %s status=%d code=%s route=%s attempts=%d client=%s latency=%.0fms: %s",
        request[REQUEST_ID], verb, request.method, request.path, status, code, route, attempts,
        _client(request), _ms_since(started), message,
        extra={"event": "request_" + verb, "status": status, "code": code, "route": route, "attempts": attempts,
               "path": request.path},
    )
    _record(request, "error" if status >= 500 else "rejected", code)


def _finish_cancelled(request: web.Request, started: float) -> None:
    log.info("request %s cancelled: the client disconnected after %.0f ms", request[REQUEST_ID], _ms_since(started),
             extra={"event": "request_cancelled", "path": request.path})
    _record(request, "cancelled", "cancelled")


def _record(request: web.Request, outcome: Outcome, code: str) -> None:
    if request.path.startswith(_API_PREFIX):
        request.app[METRICS].request_failed(_context(request), outcome, code)


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _context(request: web.Request) -> RequestContext | None:
    return request[REQUEST_CONTEXT] if REQUEST_CONTEXT in request else None


def _client(request: web.Request) -> str:
    return request[CALLER].identity if CALLER in request else "-"


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _request_id(request: web.Request) -> str:
    header_value = request.headers.get("x-request-id", "")
    # ASCII only: the id is echoed in a response header, which must stay a single clean line.
    if header_value and len(header_value) <= _MAX_REQUEST_ID and header_value.isascii() and header_value.isprintable():
        return header_value
    return ids.request_id()


def _http_error(exc: web.HTTPException) -> web.Response:
    code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(exc.status, None)
    message = redact(exc.reason)
    if exc.status == 404:
        message = ("no such endpoint; this bridge serves /v1/chat/completions, /v1/embeddings, /v1/models, "
                   "/healthz, /metrics and /admin/status")
    elif exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        message = f"this endpoint does not accept that method; use {allowed or 'another method'}"
    body: dict[str, object] = {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code},
    }
    return _error_response(exc.status, body, {})


def _error_response(status: int, body: dict[str, object], headers: dict[str, str]) -> web.Response:
    return web.Response(status=status, body=dumps(body), content_type="application/json", headers=headers)
