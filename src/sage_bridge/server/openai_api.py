"""The OpenAI-compatible endpoints: chat completions, embeddings and the model list."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web

from sage_bridge.accounting.cost import format_usd
from sage_bridge.errors import BridgeError
from sage_bridge.graph.model import RoutingGraph
from sage_bridge.metrics import Outcome
from sage_bridge.routing.context import RequestContext
from sage_bridge.server.identity import client_identity
from sage_bridge.server.keys import METRICS, REQUEST_CONTEXT, REQUEST_ID, RUNTIME
from sage_bridge.server.parse import read_json, validate
from sage_bridge.server.wire import DONE, ChunkWriter, chat_completion_body, dumps, embeddings_body, error_event
from sage_bridge.types import ChatRequest, EmbeddingRequest, Usage

log = logging.getLogger(__name__)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    # The request keeps one graph snapshot from start to end, a stream's last byte included.
    with request.app[RUNTIME].hold_graph() as graph:
        return await _chat_completions(request, graph)


async def _chat_completions(request: web.Request, graph: RoutingGraph) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    body = await read_json(request, graph.loaded.config.server.max_body_bytes)
    chat = validate(ChatRequest, body)
    ctx = _context(request, "chat")
    if chat.stream:
        return await _stream(request, chat, ctx, graph)

    result = await runtime.router.chat(graph, chat, ctx)
    return _json_answer(request, ctx, chat_completion_body(result, chat.model), result.usage)


async def embeddings(request: web.Request) -> web.Response:
    with request.app[RUNTIME].hold_graph() as graph:
        return await _embeddings(request, graph)


async def _embeddings(request: web.Request, graph: RoutingGraph) -> web.Response:
    runtime = request.app[RUNTIME]
    body = await read_json(request, graph.loaded.config.server.max_body_bytes)
    embed = validate(EmbeddingRequest, body)
    ctx = _context(request, "embeddings")
    result = await runtime.router.embed(graph, embed, ctx)
    return _json_answer(request, ctx, embeddings_body(result, embed), result.usage)


def _context(request: web.Request, endpoint: str) -> RequestContext:
    ctx = RequestContext(request_id=request[REQUEST_ID], client=client_identity(request), endpoint=endpoint)
    request[REQUEST_CONTEXT] = ctx  # the middleware reads it to label a failed request
    return ctx


def _json_answer(request: web.Request, ctx: RequestContext, body: dict[str, Any], usage: Usage) -> web.Response:
    response = web.Response(body=dumps(body), content_type="application/json")
    response.headers.update(bridge_headers(ctx))
    # Counted and logged in a callback that runs after aiohttp has written the response, so this
    # work is off the response's path. The callback runs in the request's context, with its id.
    asyncio.get_running_loop().call_soon(_log_finished, request, ctx, usage)
    return response


async def _stream(request: web.Request, chat: ChatRequest, ctx: RequestContext, graph: RoutingGraph) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    answer = await runtime.router.stream(graph, chat, ctx)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    response.headers.update(bridge_headers(ctx))
    writer = ChunkWriter(chat.model, chat.wants_usage_chunk)
    usage = Usage(estimated=True)
    try:
        await response.prepare(request)
        async for event in answer.events:
            if event.usage is not None:
                usage = event.usage
                continue
            data = writer.event(event)
            if data:
                # A slow reader delays this write, and that wait is the client's, not the bridge's.
                started = time.perf_counter()
                await response.write(data)
                ctx.client_seconds += time.perf_counter() - started
        await response.write(writer.usage(usage) + DONE)
        _log_finished(request, ctx, usage)
    except BridgeError as exc:
        # The status line is already sent: report the failure in-band and end without [DONE].
        log.warning("request %s: stream from %s failed: %s", ctx.request_id, answer.deployment.name, exc.message)
        await response.write(error_event(exc.body()))
        _log_finished(request, ctx, usage, outcome="error")
    finally:
        await answer.aclose()
    return response


async def list_models(request: web.Request) -> web.Response:
    graph = request.app[RUNTIME].graph
    created = int(graph.loaded.path.stat().st_mtime) if graph.loaded.path.exists() else int(time.time())
    names = list(graph.routes) + [name for name, deployment in graph.deployments.items() if deployment.enabled]
    data = [{"id": name, "object": "model", "created": created, "owned_by": "sage-bridge"} for name in names]
    return web.json_response({"object": "list", "data": data})


def bridge_headers(ctx: RequestContext) -> dict[str, str]:
    """Return the x-bridge-* headers that say how the bridge handled the request."""
    headers = {
        "x-request-id": ctx.request_id,
        "x-bridge-route": ctx.route.name if ctx.route else "",
        "x-bridge-deployment": ctx.deployment.name if ctx.deployment else "",
        "x-bridge-attempts": str(ctx.attempts),
        "x-bridge-overhead-ms": f"{ctx.overhead_ms():.2f}",
    }
    # NOTE: a stream's headers leave before its cost is known, so streams carry no cost header;
    # their cost is in the ledger and in `bridgectl usage`.
    if ctx.cost_settled:
        headers["x-bridge-cost-usd"] = "unknown" if ctx.cost is None else format_usd(ctx.cost)
    return headers


def _log_finished(request: web.Request, ctx: RequestContext, usage: Usage, outcome: Outcome = "ok") -> None:
    """Count and log a request whose 200 response went out; a stream that failed midway is "error"."""
    request.app[METRICS].request_finished(ctx, usage, outcome)
    route = ctx.route.name if ctx.route else "-"
    deployment = ctx.deployment.name if ctx.deployment else "-"
    cost = "-"
    if ctx.cost_settled:
        cost = "unknown" if ctx.cost is None else format_usd(ctx.cost)
    latency_ms = ctx.elapsed_ms()
    log.info(
        "request %s finished: route=%s deployment=%s attempts=%d status=200 outcome=%s tokens=%d+%d cost=%s "
        "latency=%.0fms overhead=%.1fms client=%s",
        ctx.request_id, route, deployment, ctx.attempts, outcome, usage.prompt_tokens, usage.completion_tokens,
        cost, latency_ms, ctx.overhead_ms(), ctx.client,
        extra={"event": "request_finished", "route": route, "deployment": deployment, "attempts": ctx.attempts,
               "status": 200, "outcome": outcome, "prompt_tokens": usage.prompt_tokens,
               "completion_tokens": usage.completion_tokens, "cost_usd": cost, "latency_ms": round(latency_ms, 1),
               "ttft_ms": ctx.first_token_ms, "client": ctx.client},
    )
