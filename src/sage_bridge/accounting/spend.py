"""Spend records shared by the ledger and the budgets, and the budget scope names.

A scope is "global" or "KIND:NAME", with KIND one of route, deployment, provider or client.
The ledger sums spend per scope, and budgets rebuild their state from those sums at start.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal, Protocol

ScopeKind = Literal["global", "route", "deployment", "provider", "client"]
SCOPE_KINDS: tuple[ScopeKind, ...] = ("global", "route", "deployment", "provider", "client")


@dataclass(frozen=True, slots=True)
class SpendTotal:
    """Spend in one scope over a time range. Requests of unknown cost add no USD."""

    usd: Decimal
    tokens: int  # prompt plus completion tokens
    requests: int
    unknown_cost_requests: int


@dataclass(frozen=True, slots=True)
class SpendEvent:
    """The spend of one request at the instant it was recorded, for rolling windows."""

    time: datetime
    usd: Decimal  # 0 when the cost is unknown
    tokens: int


class SpendHistory(Protocol):
    """Past spend per scope; the ledger implements it, budgets read it when they start."""

    def spend_since(self, scope: str, since: datetime) -> SpendTotal: ...

    def spend_events_since(self, scope: str, since: datetime) -> list[SpendEvent]: ...


def parse_scope(scope: str) -> tuple[ScopeKind, str | None]:
    """Split "route:default" into ("route", "default"); "global" has no name."""
    if scope == "global":
        return "global", None
    kind, separator, name = scope.partition(":")
    for known in SCOPE_KINDS[1:]:
        if kind == known and separator and name:
            return known, name
    raise ValueError(
        f'budget scope "{scope}" is not valid; write "global" or KIND:NAME with KIND one of '
        "route, deployment, provider or client"
    )


def request_scopes(
    *, route: str | None = None, deployment: str | None = None, provider: str | None = None, client: str | None = None
) -> tuple[str, ...]:
    """Return every scope one attempt falls under, "global" first."""
    scopes = ["global"]
    for kind, name in (("route", route), ("deployment", deployment), ("provider", provider), ("client", client)):
        if name is not None:
            scopes.append(f"{kind}:{name}")
    return tuple(scopes)
