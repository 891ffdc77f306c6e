"""Run one request over a routing graph snapshot: plan the targets, attempt them, fall back."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sage_bridge.errors import Action, AllTargetsFailed, Attempt, ContextLengthExceeded, UpstreamError
from sage_bridge.graph.model import Deployment, Route, RoutingGraph
from sage_bridge.providers.pool import ProviderPool
from sage_bridge.types import ChatRequest, ChatResult, StreamEvent

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RequestContext:
    """What the bridge knows about one request while it runs."""

    request_id: str
    client: str
    started: float = field(default_factory=time.perf_counter)
    upstream_seconds: float = 0.0  # time spent waiting on deployments, excluded from overhead
    failures: list[Attempt] = field(default_factory=list)
    route: Route | None = None
    deployment: Deployment | None = None

    @property
    def attempts(self) -> int:
        return len(self.failures) + (1 if self.deployment is not None else 0)

    def overhead_ms(self) -> float:
        return max(0.0, (time.perf_counter() - self.started - self.upstream_seconds) * 1000)


@dataclass(slots=True)
class StreamAnswer:
    """A stream committed to one deployment: its first events are already received."""

    deployment: Deployment
    events: AsyncIterator[StreamEvent]


class Router:
    def __init__(self, pool: ProviderPool) -> None:
        self.pool = pool

    def plan(self, route: Route) -> list[Deployment]:
        return [target.deployment for target in route.enabled_targets()]

    async def chat(self, graph: RoutingGraph, request: ChatRequest, ctx: RequestContext) -> ChatResult:
        route = ctx.route = graph.resolve(request.model)
        for deployment in self.plan(route):
            provider = self.pool.get(deployment)
            started = time.perf_counter()
            try:
                result = await provider.chat(request, deployment.config)
            except (UpstreamError, ContextLengthExceeded) as exc:
                self._record_failure(ctx, deployment, exc)
                continue
            finally:
                ctx.upstream_seconds += time.perf_counter() - started
            ctx.deployment = deployment
            return result
        raise self._final_error(route, ctx)

    async def stream(self, graph: RoutingGraph, request: ChatRequest, ctx: RequestContext) -> StreamAnswer:
        """Open a stream on the first target that produces output. A failure before the first
        content or tool-call delta moves on to the next target, invisibly to the client."""
        route = ctx.route = graph.resolve(request.model)
        for deployment in self.plan(route):
            events = self.pool.get(deployment).stream_chat(request, deployment.config)
            started = time.perf_counter()
            try:
                head = await _read_until_commit(events)
            except (UpstreamError, ContextLengthExceeded) as exc:
                await events.aclose()
                self._record_failure(ctx, deployment, exc)
                continue
            finally:
                ctx.upstream_seconds += time.perf_counter() - started
            ctx.deployment = deployment
            return StreamAnswer(deployment, _chain(head, events))
        raise self._final_error(route, ctx)

    def _record_failure(self, ctx: RequestContext, deployment: Deployment, exc: UpstreamError | ContextLengthExceeded) -> None:
        kind = exc.kind.label if isinstance(exc, UpstreamError) else "context_length"
        ctx.failures.append(Attempt(deployment.name, kind, exc.message))
        log.warning(
            "request %s: deployment %s failed (%s): %s; trying the next target",
            ctx.request_id, deployment.name, kind, exc.message,
        )
        if isinstance(exc, UpstreamError) and exc.kind.action is Action.FINAL:
            raise exc

    def _final_error(self, route: Route, ctx: RequestContext) -> Exception:
        if ctx.failures and all(failure.kind == "context_length" for failure in ctx.failures):
            # No target had room: the client must shorten the prompt, so say exactly that.
            return ContextLengthExceeded(ctx.failures[-1].message, param="messages")
        return AllTargetsFailed(route.name, ctx.failures)


async def _read_until_commit(events: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    head: list[StreamEvent] = []
    async for event in events:
        head.append(event)
        if event.commits or event.finish_reason is not None:
            break
    return head


async def _chain(head: list[StreamEvent], rest: AsyncIterator[StreamEvent]) -> AsyncIterator[StreamEvent]:
    try:
        for event in head:
            yield event
        async for event in rest:
            yield event
    finally:
        await rest.aclose()  # type: ignore[attr-defined]
