"""Tests for reading OpenAI and Anthropic rate-limit headers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sage_bridge.limits.upstream_headers import (
    UNKNOWN_RESET_SECONDS,
    UpstreamRateLimit,
    hold_back_until,
    parse_duration,
    parse_rate_limit_headers,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("12ms", 0.012),
        ("6m0s", 360.0),
        ("1h2m3.5s", 3723.5),
        ("0.5s", 0.5),
        ("250us", 0.00025),
        ("2", 2.0),
        ("0.75", 0.75),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "1x", "s", "-1s", "1s2", "inf"])
def test_parse_duration_rejects(text: str) -> None:
    assert parse_duration(text) is None


def test_openai_headers() -> None:
    headers = {
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-remaining-requests": "499",
        "x-ratelimit-reset-requests": "120ms",
        "x-ratelimit-limit-tokens": "200000",
        "x-ratelimit-remaining-tokens": "199000",
        "x-ratelimit-reset-tokens": "6m0s",
    }

    limits = parse_rate_limit_headers(headers)

    assert limits == UpstreamRateLimit(
        remaining_requests=499, remaining_tokens=199000, requests_reset_after=0.12, tokens_reset_after=360.0
    )


def test_header_names_ignore_case() -> None:
    headers = {"X-RateLimit-Remaining-Requests": "0", "X-RateLimit-Reset-Requests": "1s"}

    limits = parse_rate_limit_headers(headers)

    assert limits is not None
    assert limits.remaining_requests == 0
    assert limits.requests_reset_after == 1.0


def test_anthropic_headers() -> None:
    headers = {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "12",
        "anthropic-ratelimit-requests-reset": "2026-03-01T12:00:05Z",
        "anthropic-ratelimit-tokens-remaining": "9000",
        "anthropic-ratelimit-tokens-reset": "2026-03-01T12:00:20Z",
        "anthropic-ratelimit-input-tokens-remaining": "4000",
        "anthropic-ratelimit-input-tokens-reset": "2026-03-01T12:00:30.5Z",
        "anthropic-ratelimit-output-tokens-remaining": "8000",
        "anthropic-ratelimit-output-tokens-reset": "2026-03-01T12:00:10Z",
    }

    limits = parse_rate_limit_headers(headers, now=NOW)

    assert limits is not None
    assert limits.remaining_requests == 12
    assert limits.requests_reset_after == pytest.approx(5.0)
    # The input-token window has the fewest tokens left, so it is the one reported.
    assert limits.remaining_tokens == 4000
    assert limits.tokens_reset_after == pytest.approx(30.5)


def test_anthropic_tie_takes_later_reset() -> None:
    headers = {
        "anthropic-ratelimit-input-tokens-remaining": "0",
        "anthropic-ratelimit-input-tokens-reset": "2026-03-01T12:00:04Z",
        "anthropic-ratelimit-output-tokens-remaining": "0",
        "anthropic-ratelimit-output-tokens-reset": "2026-03-01T12:00:09Z",
    }

    limits = parse_rate_limit_headers(headers, now=NOW)

    assert limits is not None
    assert limits.remaining_tokens == 0
    assert limits.tokens_reset_after == pytest.approx(9.0)


def test_anthropic_past_reset_is_zero() -> None:
    headers = {
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": "2026-03-01T11:59:00+00:00",
    }

    limits = parse_rate_limit_headers(headers, now=NOW)

    assert limits is not None
    assert limits.requests_reset_after == 0.0


def test_no_rate_limit_headers() -> None:
    assert parse_rate_limit_headers({"content-type": "application/json"}) is None


def test_malformed_values_are_ignored() -> None:
    headers = {
        "x-ratelimit-remaining-requests": "many",
        "x-ratelimit-reset-requests": "soon",
        "x-ratelimit-remaining-tokens": "10",
    }

    limits = parse_rate_limit_headers(headers)

    assert limits == UpstreamRateLimit(remaining_tokens=10)


def test_malformed_anthropic_reset_is_ignored() -> None:
    headers = {
        "anthropic-ratelimit-requests-remaining": "3",
        "anthropic-ratelimit-requests-reset": "tomorrow",
    }

    limits = parse_rate_limit_headers(headers, now=NOW)

    assert limits == UpstreamRateLimit(remaining_requests=3)


# hold_back_until


def test_hold_back_when_no_request_remains() -> None:
    limits = UpstreamRateLimit(remaining_requests=0, requests_reset_after=2.5)

    assert hold_back_until(limits, observed_at=100.0) == 102.5


def test_hold_back_when_tokens_below_estimate() -> None:
    limits = UpstreamRateLimit(remaining_tokens=300, tokens_reset_after=4.0)

    assert hold_back_until(limits, observed_at=100.0, tokens=500) == 104.0
    assert hold_back_until(limits, observed_at=100.0, tokens=300) is None


def test_hold_back_takes_latest_reset() -> None:
    limits = UpstreamRateLimit(
        remaining_requests=0, remaining_tokens=0, requests_reset_after=1.0, tokens_reset_after=7.0
    )

    assert hold_back_until(limits, observed_at=100.0) == 107.0


def test_no_hold_back_with_capacity_left() -> None:
    limits = UpstreamRateLimit(remaining_requests=5, remaining_tokens=5000, requests_reset_after=1.0)

    assert hold_back_until(limits, observed_at=100.0, tokens=1000) is None


def test_hold_back_unknown_reset_uses_default() -> None:
    limits = UpstreamRateLimit(remaining_requests=0)

    assert hold_back_until(limits, observed_at=100.0) == 100.0 + UNKNOWN_RESET_SECONDS
