"""Calendar and rolling budget windows, checked at fixed instants, DST days included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from sage_bridge.accounting.windows import (
    CalendarWindow,
    RollingWindow,
    load_zone,
    parse_duration,
    utc_now,
    window_for,
)
from sage_bridge.config.schema import BudgetConfig

BERLIN = ZoneInfo("Europe/Berlin")


def _utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def _berlin(year: int, month: int, day: int, hour: int = 0, minute: int = 0, fold: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN, fold=fold)


def test_utc_now_accepts_epoch_float() -> None:
    assert utc_now(lambda: 0.0) == _utc(1970, 1, 1)


def test_utc_now_converts_aware_datetime() -> None:
    instant = utc_now(lambda: _berlin(2026, 7, 1, 12))
    assert instant == _utc(2026, 7, 1, 10)
    assert instant.tzinfo is UTC


def test_utc_now_rejects_naive_datetime() -> None:
    with pytest.raises(ValueError, match="naive"):
        utc_now(lambda: datetime(2026, 1, 1))


def test_day_in_berlin_winter() -> None:
    window = CalendarWindow("day", BERLIN).window_at(_utc(2026, 1, 15, 23, 30))
    assert window.start == _utc(2026, 1, 15, 23)  # local midnight of 16 January, UTC+1
    assert window.end == _utc(2026, 1, 16, 23)


def test_spring_forward_day_is_23_hours() -> None:
    window = CalendarWindow("day", BERLIN).window_at(_berlin(2026, 3, 29, 12))
    assert window.start == _berlin(2026, 3, 29)
    assert window.end == _berlin(2026, 3, 30)
    assert window.end - window.start == timedelta(hours=23)


def test_fall_back_day_is_25_hours() -> None:
    window = CalendarWindow("day", BERLIN).window_at(_berlin(2026, 10, 25, 12))
    assert window.start == _berlin(2026, 10, 25)
    assert window.end == _berlin(2026, 10, 26)
    assert window.end - window.start == timedelta(hours=25)


def test_repeated_hour_is_two_windows() -> None:
    hour = CalendarWindow("hour", BERLIN)
    first = hour.window_at(_berlin(2026, 10, 25, 2, 30, fold=0))
    second = hour.window_at(_berlin(2026, 10, 25, 2, 30, fold=1))
    assert first.start == _utc(2026, 10, 25, 0)
    assert second.start == _utc(2026, 10, 25, 1)
    assert first.end == second.start
    assert second.end - second.start == timedelta(hours=1)


def test_hour_before_spring_gap_ends_at_gap() -> None:
    window = CalendarWindow("hour", BERLIN).window_at(_berlin(2026, 3, 29, 1, 59))
    assert window.end == _berlin(2026, 3, 29, 3)
    assert window.end - window.start == timedelta(hours=1)


def test_half_hour_zone_aligns_to_local_hour() -> None:
    window = CalendarWindow("hour", ZoneInfo("Asia/Kolkata")).window_at(_utc(2026, 5, 1, 10, 10))
    assert window.start == _utc(2026, 5, 1, 9, 30)
    assert window.end == _utc(2026, 5, 1, 10, 30)


def test_week_starts_monday_midnight() -> None:
    # 2026-03-29 is a Sunday: its ISO week runs from Monday 23 March to Monday 30 March.
    window = CalendarWindow("week", BERLIN).window_at(_berlin(2026, 3, 29, 23, 59))
    assert window.start == _berlin(2026, 3, 23)
    assert window.end == _berlin(2026, 3, 30)
    assert window.end - window.start == timedelta(days=7, hours=-1)


def test_week_across_year_end() -> None:
    window = CalendarWindow("week", ZoneInfo("UTC")).window_at(_utc(2027, 1, 1, 8))
    assert window.start == _utc(2026, 12, 28)
    assert window.end == _utc(2027, 1, 4)


def test_month_with_dst_change() -> None:
    window = CalendarWindow("month", BERLIN).window_at(_berlin(2026, 10, 31, 23, 59))
    assert window.start == _berlin(2026, 10, 1)
    assert window.end == _berlin(2026, 11, 1)
    assert window.end - window.start == timedelta(days=31, hours=1)


def test_december_rolls_to_january() -> None:
    window = CalendarWindow("month", BERLIN).window_at(_berlin(2026, 12, 15))
    assert window.end == _berlin(2027, 1, 1)


def test_instant_on_boundary_starts_new_window() -> None:
    day = CalendarWindow("day", BERLIN)
    boundary = _berlin(2026, 3, 30)
    assert day.window_at(boundary).start == boundary
    assert day.window_at(boundary - timedelta(microseconds=1)).end == boundary


@pytest.mark.parametrize("period", ["hour", "day", "week", "month"])
@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/Santiago", "Australia/Lord_Howe", "Asia/Kolkata"])
def test_windows_tile_a_year(period: str, zone: str) -> None:
    # Walk a year in 20-minute steps: every instant is inside its window, and consecutive
    # windows meet without gap or overlap, across every DST change of these zones.
    spec = CalendarWindow(period, ZoneInfo(zone))  # type: ignore[arg-type]
    instant = _utc(2026, 1, 1)
    previous = spec.window_at(instant)
    while instant < _utc(2027, 1, 1):
        window = spec.window_at(instant)
        assert window.start <= instant < window.end, instant
        if window != previous:
            assert window.start == previous.end, instant
        previous = window
        instant += timedelta(minutes=20)


def test_santiago_day_starts_at_skipped_midnight() -> None:
    # Chile moves clocks from 00:00 to 01:00 on 6 September 2026, so that day starts at 01:00.
    window = CalendarWindow("day", ZoneInfo("America/Santiago")).window_at(_utc(2026, 9, 6, 12))
    assert window.start == _utc(2026, 9, 6, 4)
    assert window.end - window.start == timedelta(hours=23)


def test_rolling_window_ends_now() -> None:
    window = RollingWindow(timedelta(hours=24), "24h").window_at(_utc(2026, 3, 29, 12))
    assert window.start == _utc(2026, 3, 28, 12)
    assert window.end == _utc(2026, 3, 29, 12)


@pytest.mark.parametrize(
    ("text", "length"),
    [("24h", timedelta(hours=24)), ("7d", timedelta(days=7)), ("90m", timedelta(minutes=90)), ("2w", timedelta(weeks=2))],
)
def test_parse_duration(text: str, length: timedelta) -> None:
    assert parse_duration(text) == length


@pytest.mark.parametrize("text", ["", "0h", "24", "1.5h", "h", "-3d", "24x"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="rolling window"):
        parse_duration(text)


def test_window_for_calendar_budget() -> None:
    spec = window_for(BudgetConfig(scope="global", usd=Decimal(5), per="day", timezone="Europe/Berlin"))
    assert isinstance(spec, CalendarWindow)
    assert spec.describe() == "day Europe/Berlin"


def test_window_for_rolling_budget() -> None:
    spec = window_for(BudgetConfig(scope="global", usd=Decimal(5), rolling="7d"))
    assert isinstance(spec, RollingWindow)
    assert spec.describe() == "rolling 7d"


def test_window_for_rejects_both_kinds() -> None:
    with pytest.raises(ValueError, match="keep one"):
        window_for(BudgetConfig(scope="global", usd=Decimal(5), per="day", rolling="24h"))


def test_window_for_rejects_no_window() -> None:
    with pytest.raises(ValueError, match="no window"):
        window_for(BudgetConfig(scope="global", usd=Decimal(5)))


def test_unknown_time_zone_named_in_error() -> None:
    with pytest.raises(ValueError, match="Mars/Olympus"):
        load_zone("Mars/Olympus")
