"""The lease of one attempt: a budget reservation, a rate-limit permit and a cooldown ticket.

All three are taken together before the call and given back together after it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal

from sage_bridge.accounting.budgets import BudgetBook, OverBudget, Reservation
from sage_bridge.accounting.cost import worst_case_cost
from sage_bridge.accounting.spend import request_scopes
from sage_bridge.errors import ErrorKind
from sage_bridge.graph.model import Deployment, Route
from sage_bridge.limits.cooldown import CooldownRegistry, DeploymentCooldown, TrackedAttempt
from sage_bridge.limits.limiter import Permit
from sage_bridge.limits.registry import LimiterRegistry
from sage_bridge.routing.context import RequestContext


class Skip(Exception):
    """The target cannot be attempted now; `kind` is one of routing.context.SKIP_KINDS."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(slots=True)
class Lease:
    deployment: Deployment
    reservation: Reservation
    permit: Permit
    ticket: TrackedAttempt
    started: float  # perf_counter when the call began

    def fail(self, budgets: BudgetBook, kind: ErrorKind) -> None:
        """Give everything back after a failed call that the provider did not bill."""
        budgets.release(self.reservation)
        self.permit.settle(0)
        self.permit.release()
        self.ticket.failed(kind)

    def abandon(self, budgets: BudgetBook) -> None:
        """Give everything back after a call that was cancelled before it finished."""
        if not self.reservation.closed:
            budgets.release(self.reservation)
        self.permit.release()
        self.ticket.abandoned()

    def succeed(self, budgets: BudgetBook, cost: Decimal | None, tokens: int) -> None:
        self._charge(budgets, cost, tokens)
        self.ticket.succeeded()

    def cut_short(self, budgets: BudgetBook, cost: Decimal | None, tokens: int, kind: ErrorKind | None) -> None:
        """Charge what a stream used before it broke (kind set) or the client left (kind None)."""
        self._charge(budgets, cost, tokens)
        if kind is None:
            self.ticket.abandoned()
        else:
            self.ticket.failed(kind)

    def _charge(self, budgets: BudgetBook, cost: Decimal | None, tokens: int) -> None:
        budgets.settle(self.reservation, cost, tokens)
        self.permit.settle(tokens)
        self.permit.release()


class LeaseIssuer:
    """Takes the budget reservation, the limiter permit and the cooldown ticket for an attempt."""

    def __init__(self, budgets: BudgetBook, limiters: LimiterRegistry, cooldowns: CooldownRegistry) -> None:
        self.budgets = budgets
        self.limiters = limiters
        self.cooldowns = cooldowns

    def check_available(self, deployment: Deployment, tokens: int) -> None:
        """Raise Skip when the deployment is cooling down or has no rate-limit capacity."""
        self._require_known(deployment)
        cooldown = self.cooldowns.get(deployment.name)
        limiter = self.limiters.deployment(deployment.name)
        if not cooldown.is_available():
            raise Skip("cooling_down", _cooling_down_message(deployment, cooldown))
        if not limiter.has_capacity(tokens):
            raise Skip("rate_limited_locally", f"deployment {deployment.name} is at its rate limit")

    def _require_known(self, deployment: Deployment) -> None:
        try:
            self.cooldowns.get(deployment.name)
            self.limiters.deployment(deployment.name)
        except KeyError:
            # A request still running on a replaced graph reached a deployment the reload removed.
            raise Skip("removed", f"deployment {deployment.name} was removed by a config reload") from None

    def issue(
        self, deployment: Deployment, route: Route, ctx: RequestContext, output_cap: int | None, permit: Permit | None = None
    ) -> Lease:
        """Reserve the worst-case cost and take a permit and a cooldown ticket, or raise.

        Raises OverBudget when a budget in scope refuses (the caller reads `on_exceed`), and
        Skip when the limiter or the cooldown breaker turns the attempt away.
        """
        output = output_cap or deployment.config.max_tokens
        tokens = ctx.estimated_prompt_tokens + (output or 0)
        scopes = request_scopes(route=route.name, deployment=deployment.name, provider=deployment.provider, client=ctx.client)
        worst_usd = worst_case_cost(deployment.price, ctx.estimated_prompt_tokens, output)
        reservation = self.budgets.reserve(scopes, worst_usd, tokens if output else None)
        try:
            self._require_known(deployment)  # a reload may have removed it since the last attempt
            permit = permit or self.limiters.deployment(deployment.name).try_acquire(tokens)
            if permit is None:
                raise Skip("rate_limited_locally", f"deployment {deployment.name} is at its rate limit")
            cooldown = self.cooldowns.get(deployment.name)
            ticket = cooldown.begin_attempt()
            if ticket is None:
                permit.release()
                raise Skip("cooling_down", _cooling_down_message(deployment, cooldown))
        except BaseException:
            self.budgets.release(reservation)
            raise
        return Lease(deployment, reservation, permit, ticket, time.perf_counter())


def _cooling_down_message(deployment: Deployment, cooldown: DeploymentCooldown) -> str:
    remaining = cooldown.status().cooldown_remaining
    if remaining > 0:
        return f"deployment {deployment.name} is cooling down after repeated failures, for {remaining:.0f} s more"
    # The cooldown is over and its single probe request is still running.
    return f"deployment {deployment.name} is cooling down after repeated failures; a probe request is checking it"


__all__ = ["Lease", "LeaseIssuer", "OverBudget", "Skip"]
