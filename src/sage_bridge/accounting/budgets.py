"""Budgets: admit a request only if every budget in its scopes can cover its worst-case cost.

The router calls, per attempt:

    reservation = book.reserve(scopes, worst_case_usd, worst_case_tokens)  # or OverBudget
    ...call the deployment...
    book.settle(reservation, real_usd, real_tokens)   # or book.release(reservation) on failure

`reserve` checks every budget before it reserves anything, with no await in between. On the
single-threaded event loop, concurrent requests therefore cannot jointly overrun a budget. Budget state
is keyed by scope, window and position, so a reload that changes only a limit keeps the spend,
and a new or re-windowed budget is rebuilt from the ledger.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

from sage_bridge.accounting.budget_state import Budget, CalendarSpend, Refusal, RollingSpend
from sage_bridge.accounting.spend import SpendEvent, SpendHistory, parse_scope
from sage_bridge.accounting.windows import CalendarWindow, Clock, utc_now, window_for
from sage_bridge.config.schema import BudgetConfig
from sage_bridge.errors import BudgetExceeded

logger = logging.getLogger(__name__)

__all__ = [
    "ApplyReport",
    "BudgetBook",
    "BudgetSnapshot",
    "OverBudget",
    "Refusal",
    "Reservation",
]


class OverBudget(BudgetExceeded):
    """Raised by BudgetBook.reserve when a budget in scope cannot cover the request.

    Left uncaught, it answers the client with 429 `budget_exceeded`. A router that falls back
    instead reads `on_exceed` and `refusals`.
    """

    def __init__(self, refusals: tuple[Refusal, ...], now: datetime) -> None:
        # The request can pass only once every refusing budget has room again.
        wait = max((refusal.resets_at - now).total_seconds() for refusal in refusals)
        super().__init__(refusals[0].message(), retry_after=max(wait, 0.0))
        self.refusals = refusals

    @property
    def on_exceed(self) -> Literal["reject", "fallback"]:
        """Return "reject" if any refusing budget has on_exceed: reject, else "fallback"."""
        if any(refusal.on_exceed == "reject" for refusal in self.refusals):
            return "reject"
        return "fallback"


@dataclass(eq=False, slots=True)
class Reservation:
    """Amounts held against each budget in scope until settle() or release()."""

    usd: Decimal
    tokens: int
    budgets: tuple[Budget, ...]
    closed: bool = False


@dataclass(frozen=True, slots=True)
class BudgetSnapshot:
    """One budget's state for `bridgectl status`; limits and remainders are None when unset."""

    scope: str
    window: str
    window_start: datetime
    resets_at: datetime | None  # None for a rolling window with no spend in it
    on_exceed: Literal["reject", "fallback"]
    spent_usd: Decimal
    reserved_usd: Decimal
    limit_usd: Decimal | None
    remaining_usd: Decimal | None
    spent_tokens: int
    reserved_tokens: int
    limit_tokens: int | None
    remaining_tokens: int | None
    soft_threshold: float | None
    soft_exceeded: bool


@dataclass(frozen=True, slots=True)
class ApplyReport:
    kept: tuple[str, ...]  # budget keys whose spend carried over
    added: tuple[str, ...]  # budget keys built new (from the ledger when history was given)
    removed: tuple[str, ...]


class BudgetBook:
    """Every configured budget, indexed by scope."""

    def __init__(self, clock: Clock = time.time) -> None:
        self._clock = clock
        self._budgets: dict[str, Budget] = {}
        self._by_scope: dict[str, list[Budget]] = {}

    def apply(
        self,
        configs: Sequence[BudgetConfig],
        *,
        history: SpendHistory | None = None,
        allow_unpriced: bool = False,
    ) -> ApplyReport:
        """Install a new list of budgets, keeping the spend of those whose scope and window stay.

        New budgets load their window's spend from `history` (the ledger) when it is given.
        Raises ValueError, before changing anything, when a budget's window is not valid.
        """
        now = utc_now(self._clock)
        keyed = _key_configs(configs)
        budgets: dict[str, Budget] = {}
        kept: list[str] = []
        added: list[str] = []
        for key, config in keyed:
            budget = self._budgets.get(key)
            if budget is not None:
                budget.config, budget.allow_unpriced = config, allow_unpriced
                kept.append(key)
            else:
                budget = _new_budget(key, config, now, allow_unpriced)
                if history is not None:
                    budget.load(history, now)
                added.append(key)
            budgets[key] = budget

        removed = tuple(key for key in self._budgets if key not in budgets)
        self._budgets = budgets
        self._by_scope = _index_by_scope(budgets.values())
        logger.info("budgets applied: %d kept, %d added, %d removed", len(kept), len(added), len(removed))
        return ApplyReport(tuple(kept), tuple(added), removed)

    def check(self, scopes: Iterable[str], worst_case_usd: Decimal | None, worst_case_tokens: int | None) -> tuple[Refusal, ...]:
        """Return the refusals a reservation would meet now, without holding anything."""
        now = utc_now(self._clock)
        refusals = (budget.refusal(now, worst_case_usd, worst_case_tokens) for budget in self._in_scopes(scopes))
        return tuple(refusal for refusal in refusals if refusal is not None)

    def reserve(self, scopes: Iterable[str], worst_case_usd: Decimal | None, worst_case_tokens: int | None) -> Reservation:
        """Hold the worst case against every budget in `scopes`, or raise OverBudget holding nothing.

        None means the amount has no upper bound (an unpriced deployment, no output cap): a
        budget with that kind of limit rejects it, except USD limits under allow_unpriced.
        """
        now = utc_now(self._clock)
        budgets = self._in_scopes(scopes)
        refusals = tuple(
            refusal
            for refusal in (budget.refusal(now, worst_case_usd, worst_case_tokens) for budget in budgets)
            if refusal is not None
        )
        if refusals:
            raise OverBudget(refusals, now)

        usd, tokens = worst_case_usd or Decimal(0), worst_case_tokens or 0
        for budget in budgets:
            budget.hold(usd, tokens)
        return Reservation(usd, tokens, budgets)

    def settle(self, reservation: Reservation, real_usd: Decimal | None, real_tokens: int) -> None:
        """Replace the held worst case with the real spend; None USD (unpriced) adds no USD."""
        self._close(reservation)
        event = SpendEvent(utc_now(self._clock), real_usd or Decimal(0), real_tokens)
        for budget in reservation.budgets:
            budget.add_spend(event)

    def release(self, reservation: Reservation) -> None:
        """Drop the held amounts of an attempt that cost nothing."""
        self._close(reservation)

    def snapshot(self) -> list[BudgetSnapshot]:
        now = utc_now(self._clock)
        return [_snapshot(budget, now) for budget in self._budgets.values()]

    def _in_scopes(self, scopes: Iterable[str]) -> tuple[Budget, ...]:
        found: dict[str, Budget] = {}
        for scope in scopes:
            for budget in self._by_scope.get(scope, ()):
                found[budget.key] = budget
        return tuple(found.values())

    @staticmethod
    def _close(reservation: Reservation) -> None:
        if reservation.closed:
            raise RuntimeError("this budget reservation was already settled or released; close it exactly once")
        reservation.closed = True
        for budget in reservation.budgets:
            budget.unhold(reservation.usd, reservation.tokens)


def _key_configs(configs: Sequence[BudgetConfig]) -> list[tuple[str, BudgetConfig]]:
    # Two budgets on the same scope and window are distinguished by their order in the list.
    keyed: list[tuple[str, BudgetConfig]] = []
    seen: dict[str, int] = {}
    for config in configs:
        parse_scope(config.scope)
        base = f"{config.scope}|{window_for(config).describe()}"
        ordinal = seen.get(base, 0)
        seen[base] = ordinal + 1
        keyed.append((f"{base}#{ordinal}", config))
    return keyed


def _new_budget(key: str, config: BudgetConfig, now: datetime, allow_unpriced: bool) -> Budget:
    window = window_for(config)
    spend = CalendarSpend(window, now) if isinstance(window, CalendarWindow) else RollingSpend(window, now)
    return Budget(key, config, spend, allow_unpriced)


def _index_by_scope(budgets: Iterable[Budget]) -> dict[str, list[Budget]]:
    index: dict[str, list[Budget]] = {}
    for budget in budgets:
        index.setdefault(budget.scope, []).append(budget)
    return index


def _snapshot(budget: Budget, now: datetime) -> BudgetSnapshot:
    budget.advance(now)
    spend, config = budget.spend, budget.config
    resets_at = spend.oldest_expiry() if isinstance(spend, RollingSpend) else spend.current.end
    remaining_usd = None if config.usd is None else max(Decimal(0), config.usd - spend.usd - budget.reserved_usd)
    remaining_tokens = None if config.tokens is None else max(0, config.tokens - spend.tokens - budget.reserved_tokens)
    return BudgetSnapshot(
        scope=budget.scope,
        window=spend.window.describe(),
        window_start=spend.span(now).start,
        resets_at=resets_at,
        on_exceed=config.on_exceed,
        spent_usd=spend.usd,
        reserved_usd=budget.reserved_usd,
        limit_usd=config.usd,
        remaining_usd=remaining_usd,
        spent_tokens=spend.tokens,
        reserved_tokens=budget.reserved_tokens,
        limit_tokens=config.tokens,
        remaining_tokens=remaining_tokens,
        soft_threshold=config.soft_threshold,
        soft_exceeded=budget.soft_exceeded(),
    )
