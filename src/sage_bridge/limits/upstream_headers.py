"""Read the rate-limit headers that OpenAI and Anthropic send with every response.

OpenAI sends `x-ratelimit-remaining-{requests,tokens}` and `x-ratelimit-reset-{requests,tokens}`,
the reset as a Go-style duration (`1s`, `12ms`, `6m0s`). Anthropic sends
`anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{remaining,reset}`, the reset as
an RFC 3339 timestamp. A deployment whose remaining count is spent is held back until the reset,
so the bridge stops sending before the provider starts returning 429.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

logger = logging.getLogger(__name__)

# A spent window whose reset the provider did not send is held back this long: long enough to
# skip the next few requests, short enough that a missing header never parks a deployment.
UNKNOWN_RESET_SECONDS = 1.0

_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|us|µs|ns|h|m|s))+")
_ANTHROPIC_TOKEN_WINDOWS = ("tokens", "input-tokens", "output-tokens")


@dataclass(frozen=True, slots=True)
class UpstreamRateLimit:
    """Rate-limit state that a provider reported in one response.

    The token fields describe the most constrained token window (Anthropic reports separate
    total, input and output token windows). Reset times are seconds after the response was read.
    """

    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    requests_reset_after: float | None = None
    tokens_reset_after: float | None = None


def parse_rate_limit_headers(
    headers: Mapping[str, str], now: datetime | None = None
) -> UpstreamRateLimit | None:
    """Parse OpenAI or Anthropic rate-limit headers; return None when the response has none.

    `now` is the wall-clock time the response was read (naive means UTC), used to turn
    Anthropic's reset timestamps into seconds. A malformed header is logged and ignored, never raised.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    if any(name.startswith("anthropic-ratelimit-") for name in lowered):
        now = now or datetime.now(UTC)
        return _parse_anthropic(lowered, now if now.tzinfo else now.replace(tzinfo=UTC))
    if any(name.startswith("x-ratelimit-") for name in lowered):
        return _parse_openai(lowered)
    return None


def hold_back_until(limits: UpstreamRateLimit, observed_at: float, tokens: int = 0) -> float | None:
    """Return the monotonic time until which a deployment should get no request, or None.

    A window is spent when no request remains, or when fewer tokens remain than the next
    request's estimate `tokens` (at least one). `observed_at` is the monotonic time the
    response was read; the result is the latest reset among the spent windows.
    """
    deadlines: list[float] = []
    if limits.remaining_requests is not None and limits.remaining_requests <= 0:
        deadlines.append(observed_at + _or_unknown(limits.requests_reset_after))
    if limits.remaining_tokens is not None and limits.remaining_tokens < max(tokens, 1):
        deadlines.append(observed_at + _or_unknown(limits.tokens_reset_after))
    return max(deadlines, default=None)


def parse_duration(text: str) -> float | None:
    """Parse a Go-style duration such as `1s`, `12ms`, `6m0s` or `1h2m3.5s` into seconds.

    A bare number is taken as seconds, as some OpenAI-compatible servers send it.
    Return None for anything else.
    """
    text = text.strip()
    try:
        return _non_negative(float(text))
    except ValueError:
        pass
    if not _DURATION.fullmatch(text):
        return None
    return sum(float(amount) * _DURATION_UNITS[unit] for amount, unit in _DURATION_PART.findall(text))


def _parse_openai(headers: Mapping[str, str]) -> UpstreamRateLimit:
    return UpstreamRateLimit(
        remaining_requests=_count(headers, "x-ratelimit-remaining-requests"),
        remaining_tokens=_count(headers, "x-ratelimit-remaining-tokens"),
        requests_reset_after=_duration(headers, "x-ratelimit-reset-requests"),
        tokens_reset_after=_duration(headers, "x-ratelimit-reset-tokens"),
    )


def _parse_anthropic(headers: Mapping[str, str], now: datetime) -> UpstreamRateLimit:
    token_windows: list[tuple[int, float | None]] = []
    for window in _ANTHROPIC_TOKEN_WINDOWS:
        remaining = _count(headers, f"anthropic-ratelimit-{window}-remaining")
        if remaining is not None:
            token_windows.append((remaining, _timestamp(headers, f"anthropic-ratelimit-{window}-reset", now)))

    # The window with the fewest tokens left binds; among equals the later reset does.
    tightest = min(token_windows, key=lambda item: (item[0], -(item[1] or 0.0)), default=(None, None))
    return UpstreamRateLimit(
        remaining_requests=_count(headers, "anthropic-ratelimit-requests-remaining"),
        remaining_tokens=tightest[0],
        requests_reset_after=_timestamp(headers, "anthropic-ratelimit-requests-reset", now),
        tokens_reset_after=tightest[1],
    )


def _count(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        logger.debug("ignored header %s: %r is not a whole number", name, value)
        return None


def _duration(headers: Mapping[str, str], name: str) -> float | None:
    value = headers.get(name)
    if value is None:
        return None
    seconds = parse_duration(value)
    if seconds is None:
        logger.debug("ignored header %s: %r is not a duration such as 1s, 12ms or 6m0s", name, value)
    return seconds


def _timestamp(headers: Mapping[str, str], name: str, now: datetime) -> float | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        reset = datetime.fromisoformat(value.strip())
    except ValueError:
        logger.debug("ignored header %s: %r is not an RFC 3339 timestamp", name, value)
        return None
    if reset.tzinfo is None:
        reset = reset.replace(tzinfo=UTC)
    return _non_negative((reset - now).total_seconds())


def _non_negative(seconds: float) -> float | None:
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _or_unknown(seconds: float | None) -> float:
    return UNKNOWN_RESET_SECONDS if seconds is None else seconds
