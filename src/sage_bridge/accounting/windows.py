"""Budget windows: calendar periods in an IANA time zone, and rolling durations.

A calendar window starts at a local wall-clock boundary and ends at the next one. The
boundaries are the hour, midnight, Monday midnight for ISO weeks, and the first of the month,
so a day with a daylight saving change lasts 23 or 25 hours. A rolling window is the fixed duration that ends now.
Every instant here is an aware datetime; the current time comes from an injected clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sage_bridge.config.schema import BudgetConfig

Period = Literal["hour", "day", "week", "month"]

# Returns the current time as an aware datetime or as seconds since the Unix epoch.
Clock = Callable[[], datetime | float]

_ROLLING = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def utc_now(clock: Clock) -> datetime:
    """Read the clock and return the instant as an aware UTC datetime."""
    value = clock()
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"clock returned the naive datetime {value}; return an aware datetime or an epoch float")
        return value.astimezone(UTC)
    return datetime.fromtimestamp(value, UTC)


@dataclass(frozen=True, slots=True)
class Window:
    """One span of a budget window: spend from `start` (inclusive) counts until `end`."""

    start: datetime
    end: datetime

    def contains(self, instant: datetime) -> bool:
        return self.start <= instant < self.end


class WindowSpec(Protocol):
    def window_at(self, instant: datetime) -> Window:
        """Return the window that contains `instant`, in UTC."""
        ...

    def describe(self) -> str:
        """Return a short text for status tables, e.g. "day Europe/Berlin"."""
        ...


@dataclass(frozen=True, slots=True)
class CalendarWindow:
    period: Period
    zone: ZoneInfo

    def window_at(self, instant: datetime) -> Window:
        local = instant.astimezone(self.zone)
        if self.period == "hour":
            return self._hour_at(local)
        start_day = _period_start(self.period, local.date())
        end_day = _next_period_start(self.period, start_day)
        return Window(_local_midnight(start_day, self.zone), _local_midnight(end_day, self.zone))

    def describe(self) -> str:
        return f"{self.period} {self.zone.key}"

    def _hour_at(self, local: datetime) -> Window:
        instant = local.astimezone(UTC)
        start = _floor_to_hour(local)
        end = self._next_hour(start)
        # Where clocks fall back by 30 minutes, flooring can land an hour early; step forward.
        while end <= instant:
            start, end = end, self._next_hour(end)
        return Window(start, end)

    def _next_hour(self, start: datetime) -> datetime:
        # The next local hour, not start + 1 h: zones that shift by 30 minutes have short hours.
        end = _floor_to_hour((start + timedelta(hours=1)).astimezone(self.zone))
        return end if end > start else start + timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class RollingWindow:
    """The `length` of time that ends now; spend counts until it is `length` old."""

    length: timedelta
    text: str

    def window_at(self, instant: datetime) -> Window:
        instant = instant.astimezone(UTC)
        return Window(instant - self.length, instant)

    def describe(self) -> str:
        return f"rolling {self.text}"


def window_for(config: BudgetConfig) -> CalendarWindow | RollingWindow:
    """Build the window of a budget; raise ValueError naming the fix when it is not valid."""
    if config.per is not None and config.rolling is not None:
        raise ValueError(
            f'budget "{config.scope}" sets both per: {config.per} and rolling: "{config.rolling}"; keep one of them'
        )
    if config.rolling is not None:
        return RollingWindow(parse_duration(config.rolling), config.rolling.strip())
    if config.per is None:
        raise ValueError(
            f'budget "{config.scope}" has no window; set per: hour, day, week or month, or rolling: "24h"'
        )
    return CalendarWindow(config.per, load_zone(config.timezone))


def parse_duration(text: str) -> timedelta:
    """Parse a rolling window length such as "90m", "24h" or "7d" (units s, m, h, d, w)."""
    match = _ROLLING.match(text)
    if match is None or int(match.group(1)) == 0:
        raise ValueError(
            f'rolling window "{text}" is not valid; write a positive whole number and one unit '
            'of s, m, h, d or w, such as "90m", "24h" or "7d"'
        )
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def load_zone(name: str) -> ZoneInfo:
    """Return the IANA time zone `name`; raise ValueError when it is not known."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f'time zone "{name}" is not an IANA time zone name; use one such as "UTC" or "Europe/Berlin"'
        ) from None


def _floor_to_hour(local: datetime) -> datetime:
    # Flooring keeps `fold`, so the repeated hour of a fall-back night is its own window.
    return local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)


def _period_start(period: Period, day: date) -> date:
    if period == "week":
        return day - timedelta(days=day.weekday())  # ISO weeks start on Monday
    if period == "month":
        return day.replace(day=1)
    return day


def _next_period_start(period: Period, start: date) -> date:
    if period == "week":
        return start + timedelta(days=7)
    if period == "month":
        return date(start.year + start.month // 12, start.month % 12 + 1, 1)
    return start + timedelta(days=1)


def _local_midnight(day: date, zone: tzinfo) -> datetime:
    # fold=0 maps a midnight skipped by a spring-forward change to the instant of the change,
    # which is when that local day really begins.
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)
