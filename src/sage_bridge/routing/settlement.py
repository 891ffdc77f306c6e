"""Settle a finished request: its real cost against budgets and limiters, and its ledger row.

The ledger row commits before the caller sends the last byte of the answer, so a daemon killed
right after answering has still recorded the request.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from decimal import Decimal

from sage_bridge.accounting.budgets import BudgetBook
from sage_bridge.accounting.cost import chat_cost, embedding_cost
from sage_bridge.accounting.ledger import Ledger, LedgerRow, Outcome
from sage_bridge.errors import ErrorKind
from sage_bridge.routing.context import RequestContext
from sage_bridge.routing.latency import LatencyTracker
from sage_bridge.routing.lease import Lease
from sage_bridge.types import Usage

log = logging.getLogger(__name__)


class Accountant:
    def __init__(self, budgets: BudgetBook, ledger: Ledger, latency: LatencyTracker) -> None:
        self.budgets = budgets
        self.ledger = ledger
        self.latency = latency

    async def settle(self, ctx: RequestContext, lease: Lease, usage: Usage, failure: ErrorKind | None = None,
                     cancelled: bool = False) -> None:
        """Charge the real usage of the attempt that answered and write the request's row."""
        cost = self._cost(ctx, lease, usage)
        ctx.cost, ctx.cost_settled = cost, True
        succeeded = failure is None and not cancelled
        outcome: Outcome = "ok"
        if cancelled:
            outcome = "cancelled"
        elif failure is not None:
            outcome = "error"
        # The row goes to the writer thread first, so that it commits while the charges below run.
        committed = self.ledger.submit(self._row(ctx, outcome, usage, cost, failure.label if failure else None))
        if succeeded:
            lease.succeed(self.budgets, cost, usage.total_tokens)
            self.latency.record(lease.deployment.name, _latency_seconds(ctx, lease))
        else:
            lease.cut_short(self.budgets, cost, usage.total_tokens, failure)
        await committed

    async def record_refusal(self, ctx: RequestContext, outcome: Outcome, error_kind: str) -> None:
        """Write the row of a request that no deployment answered; it cost nothing."""
        ctx.cost, ctx.cost_settled = Decimal(0), True
        await self.ledger.record(self._row(ctx, outcome, Usage(), Decimal(0), error_kind))

    def _cost(self, ctx: RequestContext, lease: Lease, usage: Usage) -> Decimal | None:
        price = lease.deployment.price
        return embedding_cost(usage, price) if ctx.endpoint == "embeddings" else chat_cost(usage, price)

    def _row(self, ctx: RequestContext, outcome: Outcome, usage: Usage, cost: Decimal | None, error_kind: str | None) -> LedgerRow:
        deployment = ctx.deployment
        return LedgerRow(
            time=datetime.now(UTC),
            request_id=ctx.request_id,
            client=ctx.client,
            outcome=outcome,
            cost_usd=cost,
            endpoint="embeddings" if ctx.endpoint == "embeddings" else "chat",
            route=ctx.route.name if ctx.route else None,
            deployment=deployment.name if deployment else None,
            provider=deployment.provider if deployment else None,
            upstream_model=deployment.upstream_model if deployment else None,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            estimated=usage.estimated,
            latency_ms=ctx.elapsed_ms(),
            ttft_ms=ctx.first_token_ms,
            attempts=ctx.attempts,
            error_kind=error_kind,
        )


def _latency_seconds(ctx: RequestContext, lease: Lease) -> float:
    # Streams are ranked by time to first token, other requests by the whole call.
    if ctx.first_token_ms is not None:
        return ctx.first_token_ms / 1000
    return time.perf_counter() - lease.started
