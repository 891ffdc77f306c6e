"""Run one request over a routing graph snapshot: plan the targets, attempt them with retries,
fall back, and settle the cost of the attempt that answered."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from sage_bridge.accounting.budgets import OverBudget
from sage_bridge.accounting.ledger import Outcome
from sage_bridge.accounting.cost import estimate_embedding_tokens, estimate_prompt_tokens
from sage_bridge.errors import (
    Action,
    AllTargetsFailed,
    AllTargetsRateLimited,
    Attempt,
    BridgeError,
    ContextLengthExceeded,
    ErrorKind,
    RateLimited,
    UnsupportedParameter,
    UpstreamDetail,
    UpstreamError,
)
from sage_bridge.graph.model import Deployment, Route, RoutingGraph
from sage_bridge.limits.admission import Admission
from sage_bridge.limits.clock import Clock, LoopClock
from sage_bridge.limits.limiter import Permit
from sage_bridge.limits.registry import LimiterRegistry
from sage_bridge.limits.upstream_headers import parse_rate_limit_headers
from sage_bridge.providers.base import Provider
from sage_bridge.providers.pool import ProviderPool
from sage_bridge.routing.backoff import RetryAction, attempt_timeout, decide_retry, request_deadline
from sage_bridge.routing.context import SKIP_KINDS, RequestContext
from sage_bridge.routing.lease import Lease, LeaseIssuer, Skip
from sage_bridge.routing.settlement import Accountant
from sage_bridge.routing.strategies import Planner
from sage_bridge.routing.streams import StreamAnswer, open_stream
from sage_bridge.types import ChatRequest, ChatResult, EmbeddingRequest, EmbeddingResult

log = logging.getLogger(__name__)

T = TypeVar("T")
Settled = TypeVar("Settled", ChatResult, EmbeddingResult)  # results whose usage is settled at once
Call = Callable[[Provider, Deployment], Awaitable[T]]

__all__ = ["RequestContext", "Router", "StreamAnswer"]


@dataclass(slots=True)
class _Run:
    """The state of one request's walk along its plan."""

    route: Route
    ctx: RequestContext
    output_cap: int | None
    deadline: float | None
    queue_timeout: float
    admission: Admission | None = None
    needed_context: int = 0  # after a context-length error, only larger windows are tried
    refusal: OverBudget | None = None  # the latest budget refusal of a target that was skipped
    unsupported: UnsupportedParameter | None = None  # the first target that could not honour a parameter


class Router:
    def __init__(
        self,
        pool: ProviderPool,
        limiters: LimiterRegistry,
        leases: LeaseIssuer,
        accountant: Accountant,
        planner: Planner,
        clock: Clock | None = None,
    ) -> None:
        self.pool = pool
        self.limiters = limiters
        self.leases = leases
        self.accountant = accountant
        self.planner = planner
        self.budgets = leases.budgets  # the book every lease reserves against
        self.clock = clock or LoopClock()

    async def chat(self, graph: RoutingGraph, request: ChatRequest, ctx: RequestContext) -> ChatResult:
        ctx.estimated_prompt_tokens = estimate_prompt_tokens(request)

        async def call(provider: Provider, deployment: Deployment) -> ChatResult:
            return await provider.chat(request, deployment.config)

        return await self._admitted(graph, request.model, ctx, request.output_limit, lambda run: self._settled(run, call))

    async def embed(self, graph: RoutingGraph, request: EmbeddingRequest, ctx: RequestContext) -> EmbeddingResult:
        ctx.endpoint = "embeddings"
        ctx.estimated_prompt_tokens = estimate_embedding_tokens(request)

        async def call(provider: Provider, deployment: Deployment) -> EmbeddingResult:
            return await provider.embed(request, deployment.config)

        return await self._admitted(graph, request.model, ctx, 0, lambda run: self._settled(run, call))

    async def stream(self, graph: RoutingGraph, request: ChatRequest, ctx: RequestContext) -> StreamAnswer:
        """Open a stream on the first target that produces output. A failure before the first
        content or tool-call delta moves on to the next target, invisibly to the client; the
        returned answer settles the cost when its events end."""
        ctx.estimated_prompt_tokens = estimate_prompt_tokens(request)

        async def call(provider: Provider, deployment: Deployment) -> StreamAnswer:
            return await open_stream(provider, deployment, request, ctx)

        async def open_answer(run: _Run) -> StreamAnswer:
            answer, lease = await self._walk(run, call)
            # The stream settles the cost and frees the admission slot when its events end.
            answer.bind(lease, self.accountant, run.admission)
            run.admission = None
            return answer

        return await self._admitted(graph, request.model, ctx, request.output_limit, open_answer)

    async def _settled(self, run: _Run, call: Call[Settled]) -> Settled:
        """Walk the plan, then settle the cost of the result that came back."""
        result, lease = await self._walk(run, call)
        await self.accountant.settle(run.ctx, lease, result.usage)
        return result

    async def _admitted(self, graph: RoutingGraph, model: str, ctx: RequestContext, output_cap: int | None,
                        body: Callable[[_Run], Awaitable[T]]) -> T:
        """Admit the request, check the client's own limit, run `body`, and record a refused request."""
        # A plain coroutine rather than an async context manager: every request passes here.
        route = ctx.route = graph.resolve(model)
        limits = graph.loaded.config.limits
        run = _Run(route, ctx, output_cap, request_deadline(route.retry, self.clock.monotonic()), limits.queue_timeout)
        try:
            run.admission = await self.limiters.admission.admit()
            self._check_client_limit(ctx, output_cap)
            return await body(run)
        except BridgeError as refused:
            if not ctx.cost_settled:
                outcome: Outcome = "error" if isinstance(refused, (AllTargetsFailed, UpstreamError)) else "rejected"
                await self.accountant.record_refusal(ctx, outcome, refused.code or refused.error_type)
            raise
        finally:
            if run.admission is not None:
                run.admission.release()

    def _check_client_limit(self, ctx: RequestContext, output_cap: int | None) -> None:
        limiter = self.limiters.client(ctx.client)
        if limiter is None:
            return
        tokens = ctx.estimated_prompt_tokens + (output_cap or 0)
        permit = limiter.try_acquire(tokens)
        if permit is None:
            wait = limiter.time_until_capacity(tokens)
            raise RateLimited(f'client "{ctx.client}" is over its rate limit; retry in {wait:.1f} s', retry_after=wait)
        # NOTE: the client's tokens are charged at the estimate; real usage is not fed back.
        permit.settle(tokens)
        permit.release()

    # Walking the plan.

    async def _walk(self, run: _Run, call: Call[T]) -> tuple[T, Lease]:
        tokens = run.ctx.estimated_prompt_tokens + (run.output_cap or 0)
        waiting: list[Deployment] = []
        for target in self.planner.order(run.route, run.ctx.estimated_prompt_tokens, run.output_cap):
            deployment = target.deployment
            try:
                self._check_fits(run, deployment)
                self.leases.check_available(deployment, tokens)
            except Skip as skip:
                self._skip(run.ctx, deployment, skip)
                if skip.kind == "rate_limited_locally":
                    waiting.append(deployment)
                continue
            answer = await self._try_deployment(run, deployment, call)
            if answer is not None:
                return answer
        if waiting:
            answer = await self._wait_for_capacity(run, waiting, tokens, call)
            if answer is not None:
                return answer
        raise self._final_error(run)

    async def _try_deployment(self, run: _Run, deployment: Deployment, call: Call[T], permit: Permit | None = None
                              ) -> tuple[T, Lease] | None:
        """Attempt one deployment, retrying per the route's policy; None means move on."""
        policy, ctx = run.route.retry, run.ctx
        made = 0
        while True:
            try:
                lease = self.leases.issue(deployment, run.route, ctx, run.output_cap, permit)
            except OverBudget as refused:
                if refused.on_exceed == "reject":
                    raise
                run.refusal = refused
                self._skip(ctx, deployment, Skip("over_budget", refused.message))
                return None
            except Skip as skip:
                self._skip(ctx, deployment, skip)
                return None
            permit = None  # a permit handed in is used by the first attempt only
            made += 1
            try:
                value = await self._call(run, deployment, lease, call)
            except (UpstreamError, ContextLengthExceeded) as failure:
                kind = failure.kind if isinstance(failure, UpstreamError) else ErrorKind.CONTEXT_LENGTH
                lease.fail(self.budgets, kind)
                self._record_failure(ctx, deployment, failure, kind)
                if kind.action is Action.FINAL:
                    raise
                if kind is ErrorKind.CONTEXT_LENGTH:
                    run.needed_context = max(run.needed_context, (deployment.context or 0) + 1)
                if kind.action is Action.FALLBACK:
                    return None
                decision = decide_retry(policy, made, now=self.clock.monotonic(), deadline=run.deadline,
                                        retry_after=failure.retry_after if isinstance(failure, UpstreamError) else None)
                if decision.action is RetryAction.MOVE_ON:
                    log.info("request %s: moving on from %s: %s", ctx.request_id, deployment.name, decision.reason)
                    return None
                log.info("request %s: %s on %s", ctx.request_id, decision.reason, deployment.name)
                await self.clock.sleep(decision.delay)
                continue
            except UnsupportedParameter as unsupported:
                lease.abandon(self.budgets)
                run.unsupported = run.unsupported or unsupported
                self._skip(ctx, deployment, Skip("unsupported_params", unsupported.message))
                return None
            except BaseException:
                lease.abandon(self.budgets)
                raise
            ctx.deployment = deployment
            self._observe_rate_limits(deployment, getattr(value, "rate_limits", None) or ctx.rate_limits)
            return value, lease

    async def _call(self, run: _Run, deployment: Deployment, lease: Lease, call: Call[T]) -> T:
        provider = self.pool.get(deployment)
        timeout = attempt_timeout(run.route.retry, self.clock.monotonic(), run.deadline)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                return await call(provider, deployment)
        except TimeoutError:
            raise UpstreamError(
                ErrorKind.TIMEOUT, f"deployment {deployment.name} did not answer within {timeout:.3g} s",
                UpstreamDetail(provider=deployment.provider),
            ) from None
        finally:
            run.ctx.upstream_seconds += time.perf_counter() - started

    async def _wait_for_capacity(self, run: _Run, waiting: list[Deployment], tokens: int, call: Call[T]
                                 ) -> tuple[T, Lease] | None:
        """No target had capacity: wait up to the queue timeout for the first that frees up."""
        soonest = min(waiting, key=lambda d: self.limiters.deployment(d.name).time_until_capacity(tokens))
        log.info("request %s: every target is at its rate limit; waiting up to %.1f s for %s",
                 run.ctx.request_id, run.queue_timeout, soonest.name)
        permit = await self.limiters.deployment(soonest.name).acquire(tokens, timeout=run.queue_timeout)
        return await self._try_deployment(run, soonest, call, permit)

    def _observe_rate_limits(self, deployment: Deployment, headers: dict[str, str] | None) -> None:
        """Let the provider's remaining-quota headers hold the deployment back before it 429s."""
        limits = parse_rate_limit_headers(headers) if headers else None
        if limits is not None:
            self.limiters.deployment(deployment.name).observe_upstream(limits)

    def _check_fits(self, run: _Run, deployment: Deployment) -> None:
        context = deployment.context
        if context is None:
            return
        if run.ctx.estimated_prompt_tokens > context:
            raise Skip("context_window", f"the prompt (about {run.ctx.estimated_prompt_tokens} tokens) does not fit "
                                         f"the {context}-token window of {deployment.name}")
        if context < run.needed_context:
            raise Skip("context_window", f"{deployment.name} has a smaller window than a target that was already too small")

    def _skip(self, ctx: RequestContext, deployment: Deployment, skip: Skip) -> None:
        ctx.skip(deployment, skip.kind, skip.message)
        log.info("request %s: skipping %s: %s", ctx.request_id, deployment.name, skip.message)

    def _record_failure(self, ctx: RequestContext, deployment: Deployment, failure: BridgeError, kind: ErrorKind) -> None:
        retry_after = failure.retry_after if isinstance(failure, UpstreamError) else None
        ctx.failures.append(Attempt(deployment.name, kind.label, failure.message, retry_after))
        log.warning("request %s: deployment %s failed (%s): %s", ctx.request_id, deployment.name, kind.label, failure.message)

    def _final_error(self, run: _Run) -> BridgeError:
        failures = run.ctx.failures
        if failures and all(f.kind in ("context_length", "context_window") for f in failures):
            # No target had room: the client must shorten the prompt, so say exactly that.
            return ContextLengthExceeded(failures[-1].message, param="messages")
        if run.refusal is not None and all(f.kind == "over_budget" for f in failures):
            return run.refusal
        if run.unsupported is not None and all(f.kind in SKIP_KINDS for f in failures):
            # Nothing failed upstream: no target can honour the request as sent, so say why.
            return run.unsupported
        called = [f for f in failures if f.kind not in SKIP_KINDS]
        if called and all(f.kind == ErrorKind.RATE_LIMITED.label for f in called):
            waits = [f.retry_after for f in called if f.retry_after is not None]
            return AllTargetsRateLimited(run.route.name, failures, min(waits) if waits else None)
        return AllTargetsFailed(run.route.name, failures)
