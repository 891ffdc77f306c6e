"""Read the ledger: spend per scope for budgets, and usage reports grouped by a column or day.

Each query opens its own read-only connection, so it can run on any thread. With the database in
WAL mode, a reader does not block the writer, and it reads committed rows only.
"""

from __future__ import annotations

import decimal
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from sage_bridge.accounting.cost import format_usd
from sage_bridge.accounting.spend import SpendEvent, SpendTotal, parse_scope
from sage_bridge.accounting.windows import load_zone

GroupBy = Literal["route", "deployment", "provider", "client", "day"]

# Column names come from these fixed tables, never from the caller, so they are safe in SQL.
_SCOPE_COLUMNS = {"route": "route", "deployment": "deployment", "provider": "provider", "client": "client"}
_GROUP_KEYS = {**_SCOPE_COLUMNS, "day": "local_day(time, :zone)"}

# Enough digits to add any number of ledger costs without rounding.
_SUM_CONTEXT = decimal.Context(prec=60, traps=[decimal.Inexact, decimal.InvalidOperation])


class LedgerError(Exception):
    """The ledger file cannot be opened, read or written."""


@dataclass(frozen=True, slots=True)
class UsageLine:
    """One group of a usage report; `key` is None for rows without that column (e.g. no route)."""

    key: str | None
    requests: int
    ok: int
    errors: int
    rejected: int
    cancelled: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: Decimal  # the sum of known costs
    unknown_cost_requests: int
    estimated_requests: int  # rows whose tokens were counted locally, not by the provider
    mean_latency_ms: float | None


def format_time(instant: datetime) -> str:
    """Render an aware instant as the ledger's fixed-width UTC text."""
    if instant.tzinfo is None:
        raise ValueError(f"ledger times must be aware datetimes, got the naive {instant}")
    # isoformat pads the year to four digits, which keeps every value the same width.
    return instant.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


class LedgerReader:
    def __init__(self, path: Path) -> None:
        self.path = path

    def spend_since(self, scope: str, since: datetime, until: datetime | None = None) -> SpendTotal:
        """Sum the spend of `scope` from `since` (inclusive) to `until` (exclusive, default: all)."""
        where, parameters = _scope_filter(scope, since, until)
        query = (
            "SELECT decimal_sum(cost_usd), COALESCE(SUM(prompt_tokens + completion_tokens), 0), "
            f"COUNT(*), COALESCE(SUM(cost_unknown), 0) FROM requests WHERE {where}"
        )
        with self._connect() as connection:
            usd, tokens, requests, unknown = connection.execute(query, parameters).fetchone()
        # An aggregate over no rows returns NULL.
        return SpendTotal(Decimal(usd or 0), int(tokens), int(requests), int(unknown))

    def spend_events_since(self, scope: str, since: datetime) -> list[SpendEvent]:
        """Return each request's spend in `scope` from `since` on, oldest first."""
        where, parameters = _scope_filter(scope, since, None)
        query = (
            "SELECT time, cost_usd, prompt_tokens + completion_tokens FROM requests "
            f"WHERE {where} ORDER BY time"
        )
        with self._connect() as connection:
            rows = connection.execute(query, parameters).fetchall()
        return [SpendEvent(parse_time(time), Decimal(usd or 0), int(tokens)) for time, usd, tokens in rows]

    def usage_report(self, group_by: GroupBy, start: datetime, end: datetime, timezone: str = "UTC") -> list[UsageLine]:
        """Group the requests from `start` (inclusive) to `end` (exclusive) by a column or day.

        With `group_by="day"` the key is the local date in `timezone`, as YYYY-MM-DD.
        """
        if group_by not in _GROUP_KEYS:
            raise ValueError(f'usage report group "{group_by}" is not valid; use one of {", ".join(_GROUP_KEYS)}')
        load_zone(timezone)  # a clear error before SQLite reports a failed user function
        query = f"""
            SELECT {_GROUP_KEYS[group_by]} AS key, COUNT(*),
                SUM(outcome = 'ok'), SUM(outcome = 'error'), SUM(outcome = 'rejected'),
                SUM(outcome = 'cancelled'), SUM(prompt_tokens), SUM(completion_tokens),
                SUM(cached_tokens), decimal_sum(cost_usd), SUM(cost_unknown), SUM(estimated),
                AVG(latency_ms)
            FROM requests WHERE time >= :start AND time < :end
            GROUP BY key ORDER BY key
        """
        parameters = {"start": format_time(start), "end": format_time(end), "zone": timezone}
        with self._connect() as connection:
            rows = connection.execute(query, parameters).fetchall()
        return [_usage_line(row) for row in rows]

    def _connect(self) -> _ReadConnection:
        return _ReadConnection(self.path)


class _ReadConnection:
    """A read-only connection with the ledger's SQL functions, closed on leaving `with`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise LedgerError(f"ledger file {self.path} not found; start bridged once to create it")
        try:
            self.connection = sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open the ledger {self.path} for reading: {exc}") from exc
        # typeshed types aggregates as int -> int; this one maps decimal text to decimal text.
        self.connection.create_aggregate("decimal_sum", 1, _DecimalSum)  # type: ignore[arg-type]
        self.connection.create_function("local_day", 2, _local_day, deterministic=True)
        return self.connection

    def __exit__(self, *exc_info: object) -> None:
        self.connection.close()


class _DecimalSum:
    """SQL aggregate: the exact sum of decimal texts, as text; NULLs are skipped."""

    def __init__(self) -> None:
        self.total = Decimal(0)

    def step(self, value: str | None) -> None:
        if value is not None:
            self.total = _SUM_CONTEXT.add(self.total, Decimal(value))

    def finalize(self) -> str:
        return format_usd(self.total)


def _local_day(time: str, zone: str) -> str:
    return parse_time(time).astimezone(load_zone(zone)).date().isoformat()


def _scope_filter(scope: str, since: datetime, until: datetime | None) -> tuple[str, list[Any]]:
    kind, name = parse_scope(scope)
    clauses = ["time >= ?"]
    parameters: list[Any] = [format_time(since)]
    if until is not None:
        clauses.append("time < ?")
        parameters.append(format_time(until))
    if kind != "global":
        clauses.append(f"{_SCOPE_COLUMNS[kind]} = ?")
        parameters.append(name)
    return " AND ".join(clauses), parameters


def _usage_line(row: tuple[Any, ...]) -> UsageLine:
    key, requests, ok, errors, rejected, cancelled, prompt, completion, cached, cost, unknown, estimated, latency = row
    return UsageLine(
        key=key,
        requests=int(requests),
        ok=int(ok),
        errors=int(errors),
        rejected=int(rejected),
        cancelled=int(cancelled),
        prompt_tokens=int(prompt),
        completion_tokens=int(completion),
        cached_tokens=int(cached),
        cost_usd=Decimal(cost or 0),
        unknown_cost_requests=int(unknown),
        estimated_requests=int(estimated),
        mean_latency_ms=None if latency is None else float(latency),
    )
