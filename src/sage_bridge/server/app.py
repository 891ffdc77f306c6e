"""Build the aiohttp application: routes, request ids, and errors in OpenAI's shape."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from sage_bridge.errors import BridgeError, InvalidRequest
from sage_bridge.runtime import Runtime
from sage_bridge.secrets import redact
from sage_bridge.server import admin_api, graph_api, openai_api, usage_api
from sage_bridge.server.keys import REQUEST_ID, RUNTIME
from sage_bridge.server.wire import dumps

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_MAX_REQUEST_ID = 128


def build_app(runtime: Runtime) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=runtime.graph.loaded.config.server.max_body_bytes)
    app[RUNTIME] = runtime
    app.router.add_post("/v1/chat/completions", openai_api.chat_completions)
    app.router.add_post("/v1/embeddings", openai_api.embeddings)
    app.router.add_get("/v1/models", openai_api.list_models)
    app.router.add_get("/healthz", admin_api.healthz)
    app.router.add_get("/admin/status", admin_api.status)
    app.router.add_get("/admin/graph", graph_api.graph)
    app.router.add_get("/admin/usage", usage_api.usage)
    return app


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[REQUEST_ID] = _request_id(request)
    runtime = request.app[RUNTIME]
    runtime.in_flight += 1
    try:
        response = await handler(request)
    except BridgeError as exc:
        log.info("request %s rejected: %d %s", request[REQUEST_ID], exc.status, exc.message)
        response = _error_response(exc.status, exc.body(), exc.headers())
    except web.HTTPException as exc:
        response = _http_error(exc)
    except Exception:
        log.exception("request %s failed with an unexpected error", request[REQUEST_ID])
        body = InvalidRequest("internal error in the bridge; the log has the details").body()
        body["error"]["type"] = "server_error"
        response = _error_response(500, body, {})
    finally:
        runtime.in_flight -= 1
    if not response.prepared:
        response.headers["x-request-id"] = request[REQUEST_ID]
    return response


def _request_id(request: web.Request) -> str:
    given = request.headers.get("x-request-id", "")
    if given and len(given) <= _MAX_REQUEST_ID and given.isprintable():
        return given
    return uuid.uuid4().hex


def _http_error(exc: web.HTTPException) -> web.Response:
    code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(exc.status, None)
    message = redact(exc.reason)
    if exc.status == 404:
        message = "no such endpoint; this bridge serves /v1/chat/completions, /v1/models and /healthz"
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    return _error_response(exc.status, body, {})


def _error_response(status: int, body: dict[str, object], headers: dict[str, str]) -> web.Response:
    return web.Response(status=status, body=dumps(body), content_type="application/json", headers=headers)
