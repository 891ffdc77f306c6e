"""Tests for deployment cooldowns (circuit breakers) on a manual clock."""

from __future__ import annotations

import pytest

from sage_bridge.config.schema import DeploymentConfig
from sage_bridge.errors import ErrorKind
from sage_bridge.limits.clock import ManualClock
from sage_bridge.limits.cooldown import (
    BreakerState,
    CooldownPolicy,
    CooldownRegistry,
    DeploymentCooldown,
    TrackedAttempt,
)

POLICY = CooldownPolicy(failures=3, window=60.0, cooldown=30.0)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def breaker(clock: ManualClock, policy: CooldownPolicy = POLICY) -> DeploymentCooldown:
    return DeploymentCooldown("gpt", policy, clock)


def attempt(cooldown: DeploymentCooldown) -> TrackedAttempt:
    tracked = cooldown.begin_attempt()
    assert tracked is not None, f"breaker is {cooldown.state.value}; expected it to let an attempt through"
    return tracked


def fail(cooldown: DeploymentCooldown, kind: ErrorKind = ErrorKind.SERVER_ERROR, times: int = 1) -> None:
    for _ in range(times):
        attempt(cooldown).failed(kind)


def open_breaker(cooldown: DeploymentCooldown) -> None:
    fail(cooldown, times=POLICY.failures)
    assert cooldown.state is BreakerState.OPEN


# closed -> open


def test_failures_below_threshold_stay_closed(clock: ManualClock) -> None:
    gpt = breaker(clock)

    fail(gpt, times=2)

    assert gpt.state is BreakerState.CLOSED
    assert gpt.is_available()
    assert gpt.status().failures_in_window == 2


def test_threshold_failures_in_window_open(clock: ManualClock) -> None:
    gpt = breaker(clock)

    fail(gpt)
    clock.advance(20.0)
    fail(gpt)
    clock.advance(20.0)
    fail(gpt)

    assert gpt.state is BreakerState.OPEN
    assert not gpt.is_available()
    assert gpt.begin_attempt() is None


def test_failures_outside_window_are_forgotten(clock: ManualClock) -> None:
    gpt = breaker(clock)

    fail(gpt, times=2)
    clock.advance(60.0)
    fail(gpt)

    assert gpt.state is BreakerState.CLOSED
    assert gpt.status().failures_in_window == 1


@pytest.mark.parametrize("kind", [ErrorKind.AUTH, ErrorKind.PERMISSION])
def test_auth_error_opens_at_once(clock: ManualClock, kind: ErrorKind) -> None:
    gpt = breaker(clock)

    fail(gpt, kind)

    assert gpt.state is BreakerState.OPEN
    assert gpt.status().cooldown_remaining == pytest.approx(30.0)


@pytest.mark.parametrize(
    "kind", [ErrorKind.CONTEXT_LENGTH, ErrorKind.CONTENT_POLICY, ErrorKind.INVALID_REQUEST]
)
def test_request_faults_are_not_counted(clock: ManualClock, kind: ErrorKind) -> None:
    gpt = breaker(clock)

    fail(gpt, kind, times=5)

    assert gpt.state is BreakerState.CLOSED
    assert gpt.status().failures_in_window == 0


def test_success_in_closed_keeps_failure_count(clock: ManualClock) -> None:
    gpt = breaker(clock)
    fail(gpt, times=2)

    attempt(gpt).succeeded()
    fail(gpt)

    assert gpt.state is BreakerState.OPEN


# open -> half-open -> closed or open


def test_cooldown_ends_in_half_open(clock: ManualClock) -> None:
    gpt = breaker(clock)
    open_breaker(gpt)

    clock.advance(29.0)
    assert gpt.state is BreakerState.OPEN
    assert gpt.status().cooldown_remaining == pytest.approx(1.0)
    clock.advance(1.0)

    assert gpt.status().state is BreakerState.HALF_OPEN
    assert gpt.is_available()


def test_half_open_lets_exactly_one_probe(clock: ManualClock) -> None:
    gpt = breaker(clock)
    open_breaker(gpt)
    clock.advance(30.0)

    probe = gpt.begin_attempt()

    assert probe is not None
    assert probe.is_probe
    assert gpt.begin_attempt() is None
    assert not gpt.is_available()
    assert gpt.status().probe_in_flight


def test_probe_success_closes(clock: ManualClock) -> None:
    gpt = breaker(clock)
    open_breaker(gpt)
    clock.advance(30.0)

    attempt(gpt).succeeded()

    assert gpt.state is BreakerState.CLOSED
    assert gpt.status().failures_in_window == 0
    assert gpt.begin_attempt() is not None
    assert gpt.begin_attempt() is not None


def test_probe_failure_reopens_for_full_cooldown(clock: ManualClock) -> None:
    gpt = breaker(clock)
    open_breaker(gpt)
    clock.advance(45.0)

    attempt(gpt).failed(ErrorKind.TIMEOUT)

    assert gpt.state is BreakerState.OPEN
    assert gpt.status().cooldown_remaining == pytest.approx(30.0)
    clock.advance(30.0)
    assert gpt.status().state is BreakerState.HALF_OPEN


def test_abandoned_probe_frees_the_slot(clock: ManualClock) -> None:
    gpt = breaker(clock)
    open_breaker(gpt)
    clock.advance(30.0)

    with attempt(gpt):
        pass

    assert gpt.state is BreakerState.HALF_OPEN
    assert gpt.is_available()
    assert attempt(gpt).is_probe


def test_probe_request_fault_frees_the_slot(clock: ManualClock) -> None:
    gpt = breaker(clock)
    open_breaker(gpt)
    clock.advance(30.0)

    attempt(gpt).failed(ErrorKind.CONTEXT_LENGTH)

    assert gpt.state is BreakerState.HALF_OPEN
    assert gpt.is_available()


def test_stale_attempt_results_are_ignored(clock: ManualClock) -> None:
    gpt = breaker(clock)
    slow_success = attempt(gpt)
    slow_failure = attempt(gpt)
    open_breaker(gpt)
    clock.advance(30.0)
    probe = attempt(gpt)

    slow_success.succeeded()
    assert gpt.state is BreakerState.HALF_OPEN
    slow_failure.failed(ErrorKind.AUTH)
    assert gpt.state is BreakerState.HALF_OPEN
    assert gpt.status().probe_in_flight

    probe.succeeded()
    assert gpt.status().state is BreakerState.CLOSED


def test_outcome_is_recorded_once(clock: ManualClock) -> None:
    gpt = breaker(clock)
    tracked = attempt(gpt)

    tracked.failed(ErrorKind.SERVER_ERROR)
    tracked.failed(ErrorKind.SERVER_ERROR)
    tracked.failed(ErrorKind.SERVER_ERROR)

    assert gpt.status().failures_in_window == 1
    assert gpt.state is BreakerState.CLOSED


# policy and registry


def test_policy_rejects_invalid_values() -> None:
    with pytest.raises(ValueError, match="failures must be >= 1"):
        CooldownPolicy(failures=0)
    with pytest.raises(ValueError, match="window must be > 0"):
        CooldownPolicy(window=0.0)
    with pytest.raises(ValueError, match="cooldown must be >= 0"):
        CooldownPolicy(cooldown=-1.0)


GPT = DeploymentConfig(provider="openai", model="gpt-5-mini", rpm=2)
CLAUDE = DeploymentConfig(provider="anthropic", model="claude-haiku-4-5")


def test_registry_keeps_state_across_reload(clock: ManualClock) -> None:
    registry = CooldownRegistry(POLICY, clock)
    registry.apply({"gpt": GPT, "claude": CLAUDE})
    open_breaker(registry.get("gpt"))

    registry.apply({"gpt": GPT.model_copy(update={"rpm": 10}), "claude": CLAUDE})

    assert registry.get("gpt").state is BreakerState.OPEN
    assert registry.get("claude").state is BreakerState.CLOSED


def test_registry_new_upstream_starts_closed(clock: ManualClock) -> None:
    registry = CooldownRegistry(POLICY, clock)
    registry.apply({"gpt": GPT})
    open_breaker(registry.get("gpt"))

    registry.apply({"gpt": GPT.model_copy(update={"provider": "vllm"})})

    assert registry.get("gpt").state is BreakerState.CLOSED


def test_registry_applies_new_policy(clock: ManualClock) -> None:
    registry = CooldownRegistry(POLICY, clock)
    registry.apply({"gpt": GPT})
    fail(registry.get("gpt"))

    registry.apply({"gpt": GPT}, CooldownPolicy(failures=2, window=60.0, cooldown=5.0))
    fail(registry.get("gpt"))

    assert registry.get("gpt").state is BreakerState.OPEN
    assert registry.get("gpt").status().cooldown_remaining == pytest.approx(5.0)


def test_registry_unknown_deployment_raises(clock: ManualClock) -> None:
    registry = CooldownRegistry(POLICY, clock)
    registry.apply({"gpt": GPT})

    with pytest.raises(KeyError, match='deployment "claude"'):
        registry.get("claude")


def test_registry_snapshot(clock: ManualClock) -> None:
    registry = CooldownRegistry(POLICY, clock)
    registry.apply({"gpt": GPT, "claude": CLAUDE})
    fail(registry.get("gpt"), ErrorKind.AUTH)
    clock.advance(10.0)

    snapshot = registry.snapshot()

    assert [status.deployment for status in snapshot] == ["claude", "gpt"]
    assert snapshot[0].state is BreakerState.CLOSED
    assert snapshot[1].state is BreakerState.OPEN
    assert snapshot[1].cooldown_remaining == pytest.approx(20.0)
