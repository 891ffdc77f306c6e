"""The run-time state of one budget: spend in its current window and amounts reserved.

A calendar budget keeps two running totals and zeroes them when the window rolls over. A
rolling budget keeps one event per settled request and drops events older than its length,
so its totals always cover exactly the last `length` of time.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from sage_bridge.accounting.spend import SpendEvent, SpendHistory
from sage_bridge.accounting.windows import CalendarWindow, RollingWindow, Window
from sage_bridge.config.schema import BudgetConfig

logger = logging.getLogger(__name__)

RefusalReason = Literal["usd", "tokens", "unbounded_usd", "unbounded_tokens"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """The reason one budget rejects a request. Amounts are in USD or tokens, by `reason`."""

    scope: str
    window: str
    reason: RefusalReason
    spent: Decimal
    reserved: Decimal
    limit: Decimal
    requested: Decimal | None  # None: the request has no upper bound
    resets_at: datetime
    on_exceed: Literal["reject", "fallback"]

    def message(self) -> str:
        where = f'budget "{self.scope}" ({self.window})'
        if self.reason == "unbounded_usd":
            return (
                f"{where} rejects requests whose cost has no upper bound, because the deployment has no "
                "price or the request has no output cap. Add a price, set max_tokens, or set allow_unpriced: true."
            )
        if self.reason == "unbounded_tokens":
            return f"{where} limits tokens and the request has no output cap. Set max_tokens on the request or deployment."
        unit = "USD" if self.reason == "usd" else "tokens"
        return (
            f"{where} cannot cover this request: {self.spent} {unit} spent and {self.reserved} {unit} reserved "
            f"of the {self.limit} {unit} limit, and the request may need up to {self.requested} {unit}. "
            f"The budget resets at {self.resets_at.isoformat(timespec='seconds')}."
        )


class CalendarSpend:
    def __init__(self, window: CalendarWindow, now: datetime) -> None:
        self.window = window
        self.current = window.window_at(now)
        self.usd = Decimal(0)
        self.tokens = 0

    def load(self, history: SpendHistory, scope: str) -> None:
        total = history.spend_since(scope, self.current.start)
        self.usd, self.tokens = total.usd, total.tokens

    def advance(self, now: datetime) -> bool:
        """Move to the window containing `now`; return True when the window changed."""
        # A clock stepped backwards keeps the current window rather than dropping its spend.
        if now < self.current.end:
            return False
        self.current = self.window.window_at(now)
        self.usd, self.tokens = Decimal(0), 0
        return True

    def add(self, event: SpendEvent) -> None:
        self.usd += event.usd
        self.tokens += event.tokens

    def span(self, now: datetime) -> Window:
        return self.current

    def resets_at(self, now: datetime, excess_usd: Decimal, excess_tokens: int) -> datetime:
        return self.current.end


class RollingSpend:
    def __init__(self, window: RollingWindow, now: datetime) -> None:
        self.window = window
        self.length: timedelta = window.length
        self.events: deque[SpendEvent] = deque()
        self.usd = Decimal(0)
        self.tokens = 0

    def load(self, history: SpendHistory, scope: str, now: datetime) -> None:
        for event in history.spend_events_since(scope, now - self.length):
            self.add(event)

    def advance(self, now: datetime) -> bool:
        # An event expires exactly `length` after it happened, the instant resets_at reports.
        start = now - self.length
        expired = False
        while self.events and self.events[0].time <= start:
            event = self.events.popleft()
            self.usd -= event.usd
            self.tokens -= event.tokens
            expired = True
        return expired

    def add(self, event: SpendEvent) -> None:
        self.events.append(event)
        self.usd += event.usd
        self.tokens += event.tokens

    def span(self, now: datetime) -> Window:
        return self.window.window_at(now)

    def resets_at(self, now: datetime, excess_usd: Decimal, excess_tokens: int) -> datetime:
        """Return when enough old spend expires to cover the excess, or a full length from now."""
        freed_usd, freed_tokens = Decimal(0), 0
        for event in self.events:
            freed_usd += event.usd
            freed_tokens += event.tokens
            if freed_usd >= excess_usd and freed_tokens >= excess_tokens:
                return event.time + self.length
        return now + self.length

    def oldest_expiry(self) -> datetime | None:
        return self.events[0].time + self.length if self.events else None


class Budget:
    """One configured budget: its limits, its window's spend, and what in-flight requests hold."""

    def __init__(self, key: str, config: BudgetConfig, spend: CalendarSpend | RollingSpend, allow_unpriced: bool) -> None:
        self.key = key
        self.config = config
        self.spend = spend
        self.allow_unpriced = allow_unpriced
        self.reserved_usd = Decimal(0)
        self.reserved_tokens = 0
        self.soft_warned = False

    @property
    def scope(self) -> str:
        return self.config.scope

    def load(self, history: SpendHistory, now: datetime) -> None:
        if isinstance(self.spend, RollingSpend):
            self.spend.load(history, self.scope, now)
        else:
            self.spend.load(history, self.scope)
        self._check_soft_threshold()

    def advance(self, now: datetime) -> None:
        if self.spend.advance(now):
            self.soft_warned = self.soft_exceeded()

    def refusal(self, now: datetime, usd: Decimal | None, tokens: int | None) -> Refusal | None:
        """Return why this budget cannot hold `usd` and `tokens` more, or None when it can."""
        self.advance(now)
        limit_usd, limit_tokens = self.config.usd, self.config.tokens
        if limit_usd is not None:
            if usd is None and not self.allow_unpriced:
                return self._refuse(now, "unbounded_usd", None)
            # A free request passes even a spent budget: it adds nothing to the total.
            if usd and self.spend.usd + self.reserved_usd + usd > limit_usd:
                return self._refuse(now, "usd", usd)
        if limit_tokens is not None:
            if tokens is None:
                return self._refuse(now, "unbounded_tokens", None)
            if tokens and self.spend.tokens + self.reserved_tokens + tokens > limit_tokens:
                return self._refuse(now, "tokens", Decimal(tokens))
        return None

    def hold(self, usd: Decimal, tokens: int) -> None:
        self.reserved_usd += usd
        self.reserved_tokens += tokens

    def unhold(self, usd: Decimal, tokens: int) -> None:
        self.reserved_usd -= usd
        self.reserved_tokens -= tokens

    def add_spend(self, event: SpendEvent) -> None:
        self.advance(event.time)
        self.spend.add(event)
        self._check_soft_threshold()

    def usage_fraction(self) -> float:
        """Return the largest share of a limit spent so far, 0 when the budget has no limit."""
        fractions = [0.0]
        if self.config.usd:
            fractions.append(float(self.spend.usd / self.config.usd))
        if self.config.tokens:
            fractions.append(self.spend.tokens / self.config.tokens)
        return max(fractions)

    def soft_exceeded(self) -> bool:
        threshold = self.config.soft_threshold
        return threshold is not None and self.usage_fraction() >= threshold

    def _check_soft_threshold(self) -> None:
        exceeded = self.soft_exceeded()
        if exceeded and not self.soft_warned:
            logger.warning(
                'budget "%s" (%s) passed its soft threshold of %.0f%%: %s USD and %d tokens spent',
                self.scope,
                self.spend.window.describe(),
                (self.config.soft_threshold or 0) * 100,
                self.spend.usd,
                self.spend.tokens,
            )
        # Rolling spend can fall back below the threshold; warn again if it rises past it later.
        self.soft_warned = exceeded

    def _refuse(self, now: datetime, reason: RefusalReason, requested: Decimal | None) -> Refusal:
        if reason in ("usd", "unbounded_usd"):
            spent, reserved, limit = self.spend.usd, self.reserved_usd, self.config.usd or Decimal(0)
        else:
            spent, reserved, limit = Decimal(self.spend.tokens), Decimal(self.reserved_tokens), Decimal(self.config.tokens or 0)
        excess = spent + reserved + (requested or Decimal(0)) - limit
        excess_usd = excess if reason == "usd" else Decimal(0)
        excess_tokens = int(excess) if reason == "tokens" else 0
        return Refusal(
            scope=self.scope,
            window=self.spend.window.describe(),
            reason=reason,
            spent=spent,
            reserved=reserved,
            limit=limit,
            requested=requested,
            resets_at=self.spend.resets_at(now, excess_usd, excess_tokens),
            on_exceed=self.config.on_exceed,
        )
