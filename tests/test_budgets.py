"""Budget admission, settlement, windows, reloads and rebuilding from the ledger."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from sage_bridge.accounting.budgets import BudgetBook, OverBudget, Reservation
from sage_bridge.accounting.cost import chat_cost, worst_case_cost
from sage_bridge.accounting.ledger import Ledger, LedgerRow
from sage_bridge.accounting.spend import SpendEvent, SpendTotal, request_scopes
from sage_bridge.config.schema import BudgetConfig, PriceConfig
from sage_bridge.errors import BudgetExceeded
from sage_bridge.types import Usage

SCOPES = request_scopes(route="default", deployment="sonnet", provider="anthropic", client="ci-bot")


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class FakeHistory:
    """Spend history from a fixed list of (scope, event) pairs, recording each question."""

    def __init__(self, events: list[tuple[str, SpendEvent]]) -> None:
        self.events = events
        self.questions: list[tuple[str, str, datetime]] = []

    def _matching(self, scope: str, since: datetime) -> list[SpendEvent]:
        return [event for name, event in self.events if name == scope and event.time >= since]

    def spend_since(self, scope: str, since: datetime) -> SpendTotal:
        self.questions.append(("total", scope, since))
        events = self._matching(scope, since)
        return SpendTotal(sum((e.usd for e in events), Decimal(0)), sum(e.tokens for e in events), len(events), 0)

    def spend_events_since(self, scope: str, since: datetime) -> list[SpendEvent]:
        self.questions.append(("events", scope, since))
        return self._matching(scope, since)


def _budget(scope: str = "global", **values: Any) -> BudgetConfig:
    values.setdefault("per", "day")
    return BudgetConfig(scope=scope, **values)


def _book(clock: FakeClock, *configs: BudgetConfig, **options: Any) -> BudgetBook:
    book = BudgetBook(clock)
    book.apply(list(configs), **options)
    return book


def _snapshot(book: BudgetBook, scope: str) -> Any:
    [snapshot] = [entry for entry in book.snapshot() if entry.scope == scope]
    return snapshot


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 3, 29, 10, 0, tzinfo=UTC))


# --- admission ---


async def test_one_of_five_concurrent_admitted(clock: FakeClock) -> None:
    price = PriceConfig(input=Decimal(3), output=Decimal(15))
    book = _book(clock, _budget(usd=Decimal("0.001")))
    worst = worst_case_cost(price, 100, 40)
    assert worst == Decimal("0.0009")

    async def one_request() -> bool:
        try:
            reservation = book.reserve(SCOPES, worst, 140)
        except OverBudget:
            return False
        await asyncio.sleep(0)  # the upstream call: other requests run meanwhile
        book.settle(reservation, chat_cost(Usage(prompt_tokens=100, completion_tokens=40), price), 140)
        return True

    results = await asyncio.gather(*(one_request() for _ in range(5)))
    snapshot = _snapshot(book, "global")
    assert results.count(True) == 1
    assert results.count(False) == 4
    assert snapshot.spent_usd == Decimal("0.0009")
    assert snapshot.reserved_usd == 0


def test_reserve_is_all_or_nothing(clock: FakeClock) -> None:
    book = _book(clock, _budget(usd=Decimal(10)), _budget("route:default", usd=Decimal("0.5")))
    with pytest.raises(OverBudget):
        book.reserve(SCOPES, Decimal(1), 10)
    assert _snapshot(book, "global").reserved_usd == 0
    assert _snapshot(book, "route:default").reserved_usd == 0


def test_reserve_holds_every_budget_in_scope(clock: FakeClock) -> None:
    book = _book(clock, _budget(usd=Decimal(10)), _budget("client:ci-bot", usd=Decimal(1)), _budget("client:other", usd=Decimal(1)))
    book.reserve(SCOPES, Decimal("0.25"), 10)
    assert _snapshot(book, "global").reserved_usd == Decimal("0.25")
    assert _snapshot(book, "client:ci-bot").reserved_usd == Decimal("0.25")
    assert _snapshot(book, "client:other").reserved_usd == 0


def test_request_that_exactly_fits_is_admitted(clock: FakeClock) -> None:
    book = _book(clock, _budget(usd=Decimal("0.001")))
    book.reserve(SCOPES, Decimal("0.0004"), None)
    book.reserve(SCOPES, Decimal("0.0006"), None)
    with pytest.raises(OverBudget):
        book.reserve(SCOPES, Decimal("0.0000001"), None)


def test_refusal_describes_budget(clock: FakeClock) -> None:
    book = _book(clock, _budget("route:default", usd=Decimal(1), timezone="Europe/Berlin", on_exceed="fallback"))
    first = book.reserve(SCOPES, Decimal("0.6"), 10)
    book.settle(first, Decimal("0.5"), 10)
    book.reserve(SCOPES, Decimal("0.3"), 10)
    with pytest.raises(OverBudget) as caught:
        book.reserve(SCOPES, Decimal("0.4"), 10)
    [refusal] = caught.value.refusals
    assert refusal.scope == "route:default"
    assert refusal.reason == "usd"
    assert refusal.spent == Decimal("0.5")
    assert refusal.reserved == Decimal("0.3")
    assert refusal.limit == Decimal(1)
    assert refusal.requested == Decimal("0.4")
    # 2026-03-29 is the spring-forward day: the next Berlin midnight is 22:00 UTC.
    assert refusal.resets_at == datetime(2026, 3, 29, 22, 0, tzinfo=UTC)
    assert refusal.on_exceed == "fallback"
    assert caught.value.on_exceed == "fallback"


def test_over_budget_is_a_429(clock: FakeClock) -> None:
    book = _book(clock, _budget(usd=Decimal(1)))
    with pytest.raises(BudgetExceeded) as caught:
        book.reserve(SCOPES, Decimal(2), 10)
    error = caught.value
    assert error.status == 429
    assert error.body()["error"]["code"] == "budget_exceeded"
    assert error.headers() == {"Retry-After": str(14 * 3600)}  # 10:00 UTC to midnight
    assert 'budget "global"' in error.message


def test_reject_wins_over_fallback(clock: FakeClock) -> None:
    book = _book(
        clock,
        _budget("route:default", usd=Decimal(1), on_exceed="fallback"),
        _budget("client:ci-bot", usd=Decimal(1), on_exceed="reject"),
    )
    with pytest.raises(OverBudget) as caught:
        book.reserve(SCOPES, Decimal(2), 10)
    assert len(caught.value.refusals) == 2
    assert caught.value.on_exceed == "reject"


def test_check_holds_nothing(clock: FakeClock) -> None:
    book = _book(clock, _budget(usd=Decimal(1)))
    assert book.check(SCOPES, Decimal("0.5"), 10) == ()
    assert len(book.check(SCOPES, Decimal(2), 10)) == 1
    assert _snapshot(book, "global").reserved_usd == 0


def test_free_request_passes_spent_budget(clock: FakeClock) -> None:
    book = _book(clock, _budget(usd=Decimal(1)))
    book.settle(book.reserve(SCOPES, Decimal(1), 10), Decimal("1.2"), 10)
    assert isinstance(book.reserve(SCOPES, Decimal(0), 10), Reservation)


def test_scopes_without_budget_reserve_nothing(clock: FakeClock) -> None:
    book = _book(clock, _budget("route:other", usd=Decimal(1)))
    reservation = book.reserve(SCOPES, None, None)
    assert reservation.budgets == ()


# --- unpriced and unbounded requests ---


def test_unpriced_fails_closed(clock: FakeClock) -> None:
    book = _book(clock, _budget(usd=Decimal(100)))
    with pytest.raises(OverBudget) as caught:
        book.reserve(SCOPES, None, 10)
    assert caught.value.refusals[0].reason == "unbounded_usd"
    assert "allow_unpriced" in caught.value.message


def test_unpriced_allowed_when_configured(clock: FakeClock) -> None:
    book = _book(clock, _budget(usd=Decimal(100)), allow_unpriced=True)
    reservation = book.reserve(SCOPES, None, 10)
    book.settle(reservation, None, 10)
    assert _snapshot(book, "global").spent_usd == 0
    assert _snapshot(book, "global").spent_tokens == 10


def test_token_budget_ignores_unpriced(clock: FakeClock) -> None:
    book = _book(clock, _budget(tokens=1000))
    assert isinstance(book.reserve(SCOPES, None, 500), Reservation)


def test_token_budget_limits_tokens(clock: FakeClock) -> None:
    book = _book(clock, _budget(tokens=1000))
    book.reserve(SCOPES, None, 600)
    with pytest.raises(OverBudget) as caught:
        book.reserve(SCOPES, None, 500)
    assert caught.value.refusals[0].reason == "tokens"
    assert caught.value.refusals[0].reserved == 600


def test_token_budget_rejects_unbounded_output(clock: FakeClock) -> None:
    book = _book(clock, _budget(tokens=1000))
    with pytest.raises(OverBudget) as caught:
        book.reserve(SCOPES, Decimal(0), None)
    assert caught.value.refusals[0].reason == "unbounded_tokens"


# --- settlement ---


def test_settle_replaces_reservation(clock: FakeClock) -> None:
    book = _book(clock, _budget(usd=Decimal(1), tokens=10_000))
    reservation = book.reserve(SCOPES, Decimal("0.5"), 5000)
    book.settle(reservation, Decimal("0.0123"), 321)
    snapshot = _snapshot(book, "global")
    assert snapshot.spent_usd == Decimal("0.0123")
    assert snapshot.reserved_usd == 0
    assert snapshot.spent_tokens == 321
    assert snapshot.reserved_tokens == 0


def test_release_drops_reservation(clock: FakeClock) -> None:
    book = _book(clock, _budget(usd=Decimal(1)))
    book.release(book.reserve(SCOPES, Decimal("0.5"), 10))
    snapshot = _snapshot(book, "global")
    assert snapshot.reserved_usd == 0
    assert snapshot.spent_usd == 0


def test_reservation_closes_once(clock: FakeClock) -> None:
    book = _book(clock, _budget(usd=Decimal(1)))
    reservation = book.reserve(SCOPES, Decimal("0.5"), 10)
    book.settle(reservation, Decimal("0.1"), 10)
    with pytest.raises(RuntimeError, match="already"):
        book.release(reservation)
    assert _snapshot(book, "global").reserved_usd == 0


# --- windows ---


def test_day_window_resets_at_local_midnight(clock: FakeClock) -> None:
    clock.now = datetime(2026, 10, 24, 21, 59, tzinfo=UTC)  # 23:59 in Berlin (UTC+2)
    book = _book(clock, _budget(usd=Decimal(1), timezone="Europe/Berlin"))
    book.settle(book.reserve(SCOPES, Decimal("0.9"), 10), Decimal("0.9"), 10)
    assert _snapshot(book, "global").resets_at == datetime(2026, 10, 24, 22, 0, tzinfo=UTC)
    with pytest.raises(OverBudget):
        book.reserve(SCOPES, Decimal("0.2"), 10)

    clock.advance(minutes=1)
    snapshot = _snapshot(book, "global")
    assert snapshot.spent_usd == 0
    assert snapshot.window_start == datetime(2026, 10, 24, 22, 0, tzinfo=UTC)
    assert snapshot.resets_at - snapshot.window_start == timedelta(hours=25)  # fall-back day
    assert isinstance(book.reserve(SCOPES, Decimal("0.2"), 10), Reservation)


def test_reservation_survives_window_rollover(clock: FakeClock) -> None:
    clock.now = datetime(2026, 3, 29, 21, 59, tzinfo=UTC)
    book = _book(clock, _budget(usd=Decimal(1), timezone="Europe/Berlin"))
    reservation = book.reserve(SCOPES, Decimal("0.8"), 10)
    clock.advance(minutes=2)  # past Berlin midnight
    assert _snapshot(book, "global").reserved_usd == Decimal("0.8")
    book.settle(reservation, Decimal("0.7"), 10)
    assert _snapshot(book, "global").spent_usd == Decimal("0.7")


def test_clock_stepping_back_keeps_spend(clock: FakeClock) -> None:
    book = _book(clock, _budget(usd=Decimal(1)))
    book.settle(book.reserve(SCOPES, Decimal("0.5"), 10), Decimal("0.5"), 10)
    clock.advance(days=-1)
    assert _snapshot(book, "global").spent_usd == Decimal("0.5")


def test_rolling_window_expires_old_spend(clock: FakeClock) -> None:
    book = _book(clock, _budget(usd=Decimal(1), per=None, rolling="90m"))
    book.settle(book.reserve(SCOPES, Decimal("0.6"), 10), Decimal("0.6"), 10)
    clock.advance(minutes=30)
    book.settle(book.reserve(SCOPES, Decimal("0.3"), 10), Decimal("0.3"), 10)
    with pytest.raises(OverBudget) as caught:
        book.reserve(SCOPES, Decimal("0.2"), 10)
    # Only the first request's 0.6 expiring frees enough room; it expires 90 min after 10:00.
    assert caught.value.refusals[0].resets_at == datetime(2026, 3, 29, 11, 30, tzinfo=UTC)

    clock.advance(minutes=60)
    snapshot = _snapshot(book, "global")
    assert snapshot.spent_usd == Decimal("0.3")
    assert snapshot.resets_at == datetime(2026, 3, 29, 12, 0, tzinfo=UTC)
    assert isinstance(book.reserve(SCOPES, Decimal("0.2"), 10), Reservation)


# --- soft threshold ---


def test_soft_threshold_warns_once_per_window(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sage_bridge.accounting.budget_state")
    book = _book(clock, _budget(usd=Decimal(1), soft_threshold=0.8))
    for _ in range(4):
        book.settle(book.reserve(SCOPES, Decimal("0.25"), 10), Decimal("0.21"), 10)
    warnings = [record for record in caplog.records if "soft threshold" in record.getMessage()]
    assert len(warnings) == 1
    assert _snapshot(book, "global").soft_exceeded is True

    clock.advance(days=1)
    assert _snapshot(book, "global").soft_exceeded is False
    for _ in range(4):
        book.settle(book.reserve(SCOPES, Decimal("0.25"), 10), Decimal("0.21"), 10)
    warnings = [record for record in caplog.records if "soft threshold" in record.getMessage()]
    assert len(warnings) == 2


def test_below_soft_threshold_no_warning(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sage_bridge.accounting.budget_state")
    book = _book(clock, _budget(usd=Decimal(1), soft_threshold=0.8))
    book.settle(book.reserve(SCOPES, Decimal("0.5"), 10), Decimal("0.79"), 10)
    assert not [record for record in caplog.records if "soft threshold" in record.getMessage()]
    assert _snapshot(book, "global").soft_exceeded is False


# --- snapshots ---


def test_snapshot_reports_remaining(clock: FakeClock) -> None:
    book = _book(clock, _budget("client:ci-bot", usd=Decimal(2), tokens=1000, timezone="Europe/Berlin"))
    book.settle(book.reserve(SCOPES, Decimal("0.5"), 100), Decimal("0.25"), 80)
    book.reserve(SCOPES, Decimal("0.5"), 100)
    snapshot = _snapshot(book, "client:ci-bot")
    assert snapshot.window == "day Europe/Berlin"
    assert snapshot.window_start == datetime(2026, 3, 28, 23, 0, tzinfo=UTC)
    assert snapshot.resets_at == datetime(2026, 3, 29, 22, 0, tzinfo=UTC)
    assert snapshot.limit_usd == Decimal(2)
    assert snapshot.remaining_usd == Decimal("1.25")
    assert snapshot.remaining_tokens == 820
    assert snapshot.on_exceed == "reject"


def test_snapshot_remaining_never_negative(clock: FakeClock) -> None:
    book = _book(clock, _budget(usd=Decimal(1)))
    book.settle(book.reserve(SCOPES, Decimal(1), 10), Decimal(3), 10)
    assert _snapshot(book, "global").remaining_usd == 0


# --- reloads ---


def test_apply_keeps_spend_of_unchanged_budget(clock: FakeClock) -> None:
    config = _budget(usd=Decimal(1))
    book = _book(clock, config)
    book.settle(book.reserve(SCOPES, Decimal("0.4"), 10), Decimal("0.4"), 10)
    report = book.apply([config, _budget("route:default", usd=Decimal(1))])
    assert report.kept == ("global|day UTC#0",)
    assert report.added == ("route:default|day UTC#0",)
    assert _snapshot(book, "global").spent_usd == Decimal("0.4")


def test_apply_keeps_spend_when_limit_changes(clock: FakeClock) -> None:
    book = _book(clock, _budget(usd=Decimal(1)))
    book.settle(book.reserve(SCOPES, Decimal("0.4"), 10), Decimal("0.4"), 10)
    book.apply([_budget(usd=Decimal("0.5"))])
    snapshot = _snapshot(book, "global")
    assert snapshot.spent_usd == Decimal("0.4")
    assert snapshot.limit_usd == Decimal("0.5")
    with pytest.raises(OverBudget):
        book.reserve(SCOPES, Decimal("0.2"), 10)


def test_apply_rebuilds_changed_window(clock: FakeClock) -> None:
    history = FakeHistory([("global", SpendEvent(clock.now - timedelta(hours=1), Decimal("0.7"), 70))])
    book = _book(clock, _budget(usd=Decimal(1)))
    report = book.apply([_budget(usd=Decimal(1), per="week")], history=history)
    assert report.removed == ("global|day UTC#0",)
    assert report.added == ("global|week UTC#0",)
    assert _snapshot(book, "global").spent_usd == Decimal("0.7")
    assert history.questions == [("total", "global", datetime(2026, 3, 23, tzinfo=UTC))]


def test_duplicate_budgets_are_separate(clock: FakeClock) -> None:
    book = _book(clock, _budget(usd=Decimal(1)), _budget(tokens=100))
    assert [entry.limit_tokens for entry in book.snapshot()] == [None, 100]
    with pytest.raises(OverBudget) as caught:
        book.reserve(SCOPES, Decimal("0.1"), 200)
    assert [refusal.reason for refusal in caught.value.refusals] == ["tokens"]


def test_invalid_apply_changes_nothing(clock: FakeClock) -> None:
    book = _book(clock, _budget(usd=Decimal(1)))
    with pytest.raises(ValueError, match="no window"):
        book.apply([_budget("route:default", usd=Decimal(1), per=None)])
    assert [entry.scope for entry in book.snapshot()] == ["global"]


def test_settle_after_budget_removed(clock: FakeClock) -> None:
    book = _book(clock, _budget(usd=Decimal(1)))
    reservation = book.reserve(SCOPES, Decimal("0.5"), 10)
    book.apply([])
    book.settle(reservation, Decimal("0.5"), 10)
    assert book.snapshot() == []


# --- rebuilding from the ledger ---


def test_rolling_budget_loads_events(clock: FakeClock) -> None:
    history = FakeHistory(
        [
            ("global", SpendEvent(clock.now - timedelta(hours=23), Decimal("0.4"), 40)),
            ("global", SpendEvent(clock.now - timedelta(hours=25), Decimal("5"), 500)),
        ]
    )
    book = BudgetBook(clock)
    book.apply([_budget(usd=Decimal(1), per=None, rolling="24h")], history=history)
    snapshot = _snapshot(book, "global")
    assert snapshot.spent_usd == Decimal("0.4")
    assert snapshot.resets_at == clock.now + timedelta(hours=1)


async def test_rebuild_from_ledger(tmp_path: Path, clock: FakeClock) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.open()
    rows = [
        ("r1", clock.now - timedelta(hours=1), "default", Decimal("0.0009")),
        ("r2", clock.now - timedelta(hours=2), "cheap", Decimal("0.0001")),
        ("r3", clock.now - timedelta(days=1), "default", Decimal("3")),
        ("r4", clock.now - timedelta(minutes=5), "default", None),
    ]
    for request_id, time, route, cost in rows:
        await ledger.record(
            LedgerRow(
                time=time,
                request_id=request_id,
                client="ci-bot",
                outcome="ok",
                cost_usd=cost,
                route=route,
                prompt_tokens=100,
                completion_tokens=40,
            )
        )
    book = BudgetBook(clock)
    book.apply(
        [_budget(usd=Decimal(1)), _budget("route:default", usd=Decimal(1), per=None, rolling="24h")], history=ledger
    )
    await ledger.close()
    assert _snapshot(book, "global").spent_usd == Decimal("0.0010")
    assert _snapshot(book, "global").spent_tokens == 3 * 140
    assert _snapshot(book, "route:default").spent_usd == Decimal("0.0009")
    assert _snapshot(book, "route:default").spent_tokens == 2 * 140


def test_epoch_float_clock() -> None:
    book = BudgetBook(lambda: datetime(2026, 3, 29, 10, tzinfo=UTC).timestamp())
    book.apply([_budget(usd=Decimal(1))])
    assert _snapshot(book, "global").resets_at == datetime(2026, 3, 30, tzinfo=UTC)
