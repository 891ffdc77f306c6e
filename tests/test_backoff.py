"""Tests for retry backoff, Retry-After handling and the named retry policies."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml

from sage_bridge.config.schema import RetryPolicyConfig
from sage_bridge.routing.backoff import (
    RetryAction,
    attempt_timeout,
    decide_retry,
    full_jitter_delay,
    request_deadline,
)

STANDARD = RetryPolicyConfig(attempts=3, base_delay=0.5, max_delay=8.0, attempt_timeout=60.0, deadline=120.0)
RETRY_YAML = Path(__file__).resolve().parent.parent / "policies" / "retry.yaml"


def highest(low: float, high: float) -> float:
    return high


def lowest(low: float, high: float) -> float:
    return low


# full jitter


@pytest.mark.parametrize(
    ("retry", "ceiling"), [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0), (200, 8.0)]
)
def test_jitter_ceiling_doubles_up_to_cap(retry: int, ceiling: float) -> None:
    assert full_jitter_delay(retry, 0.5, 8.0, highest) == ceiling


def test_jitter_floor_is_zero() -> None:
    assert full_jitter_delay(3, 0.5, 8.0, lowest) == 0.0


def test_jitter_draws_stay_in_bounds() -> None:
    source = random.Random(7)
    for retry in range(8):
        ceiling = min(8.0, 0.5 * 2**retry)
        draws = [full_jitter_delay(retry, 0.5, 8.0, source.uniform) for _ in range(200)]
        assert min(draws) >= 0.0
        assert max(draws) <= ceiling
        # Full jitter spreads over the whole range, not just near the ceiling.
        assert min(draws) < ceiling / 4


def test_jitter_rejects_negative_retry() -> None:
    with pytest.raises(ValueError, match="retry must be >= 0"):
        full_jitter_delay(-1, 0.5, 8.0)


# decide_retry


def test_first_failure_waits_jittered_delay() -> None:
    decision = decide_retry(STANDARD, 1, now=0.0, uniform=highest)

    assert decision.action is RetryAction.WAIT
    assert decision.delay == 0.5


def test_second_failure_doubles_ceiling() -> None:
    decision = decide_retry(STANDARD, 2, now=0.0, uniform=highest)

    assert decision.action is RetryAction.WAIT
    assert decision.delay == 1.0


def test_attempts_exhausted_moves_on() -> None:
    decision = decide_retry(STANDARD, 3, now=0.0)

    assert decision.action is RetryAction.MOVE_ON
    assert decision.delay == 0.0
    assert "3 of 3 attempts" in decision.reason


def test_policy_none_never_retries() -> None:
    decision = decide_retry(RetryPolicyConfig(attempts=1), 1, now=0.0)

    assert decision.action is RetryAction.MOVE_ON


def test_retry_after_sets_the_wait() -> None:
    decision = decide_retry(STANDARD, 1, now=0.0, retry_after=6.5, uniform=lowest)

    assert decision.action is RetryAction.WAIT
    assert decision.delay == 6.5


def test_retry_after_zero_retries_at_once() -> None:
    decision = decide_retry(STANDARD, 1, now=0.0, retry_after=0.0, uniform=highest)

    assert decision.action is RetryAction.WAIT
    assert decision.delay == 0.0


def test_retry_after_above_max_delay_moves_on() -> None:
    decision = decide_retry(STANDARD, 1, now=0.0, retry_after=30.0)

    assert decision.action is RetryAction.MOVE_ON
    assert "more than max_delay 8 s" in decision.reason


def test_wait_past_deadline_moves_on() -> None:
    decision = decide_retry(STANDARD, 1, now=100.0, deadline=105.0, retry_after=6.0)

    assert decision.action is RetryAction.MOVE_ON
    assert "deadline" in decision.reason


def test_wait_before_deadline_waits() -> None:
    decision = decide_retry(STANDARD, 1, now=100.0, deadline=110.0, retry_after=6.0)

    assert decision.action is RetryAction.WAIT
    assert decision.delay == 6.0


# deadlines and attempt timeouts


def test_request_deadline_from_policy() -> None:
    assert request_deadline(STANDARD, 1000.0) == 1120.0
    assert request_deadline(RetryPolicyConfig(), 1000.0) is None


def test_attempt_timeout_cut_at_deadline() -> None:
    assert attempt_timeout(STANDARD, now=1000.0, deadline=1120.0) == 60.0
    assert attempt_timeout(STANDARD, now=1100.0, deadline=1120.0) == 20.0
    assert attempt_timeout(STANDARD, now=1130.0, deadline=1120.0) == 0.0


def test_attempt_timeout_unset_is_none() -> None:
    assert attempt_timeout(RetryPolicyConfig(), now=0.0, deadline=None) is None
    assert attempt_timeout(RetryPolicyConfig(), now=0.0, deadline=30.0) == 30.0


# policies/retry.yaml


def load_policies() -> dict[str, RetryPolicyConfig]:
    data = yaml.safe_load(RETRY_YAML.read_text(encoding="utf-8"))
    assert list(data) == ["retry_policies"]
    return {name: RetryPolicyConfig.model_validate(body) for name, body in data["retry_policies"].items()}


def test_retry_yaml_standard_policy() -> None:
    assert load_policies()["standard"] == STANDARD


def test_retry_yaml_none_policy() -> None:
    assert load_policies()["none"].attempts == 1


def test_retry_yaml_patient_outlasts_standard() -> None:
    patient = load_policies()["patient"]

    assert patient.attempts > STANDARD.attempts
    assert patient.max_delay > STANDARD.max_delay
    assert patient.deadline is not None
    assert STANDARD.deadline is not None
    assert patient.deadline > STANDARD.deadline
