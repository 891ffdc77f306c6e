"""Tests for the rate limiters, the admission gate and the limiter registry, on a manual clock."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

import pytest

from sage_bridge.config.schema import ClientConfig, DeploymentConfig, LimitsConfig
from sage_bridge.errors import RateLimited
from sage_bridge.limits.admission import AdmissionGate
from sage_bridge.limits.clock import ManualClock
from sage_bridge.limits.limiter import LimitSettings, RequestLimiter
from sage_bridge.limits.registry import LimiterRegistry
from sage_bridge.limits.upstream_headers import UpstreamRateLimit


@pytest.fixture
async def clock() -> AsyncIterator[ManualClock]:
    loop = asyncio.get_running_loop()
    clock = ManualClock()
    clock.install(loop)
    yield clock
    delattr(loop, "time")


async def run_pending(rounds: int = 20) -> None:
    """Let every ready task run a few steps without moving the clock."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def limiter(clock: ManualClock, **limits: int) -> RequestLimiter:
    return RequestLimiter("deployment", "gpt", LimitSettings(**limits), clock)


# rpm


async def test_rpm_third_request_has_no_capacity(clock: ManualClock) -> None:
    gpt = limiter(clock, rpm=2)

    assert gpt.try_acquire() is not None
    assert gpt.try_acquire() is not None
    assert not gpt.has_capacity()
    assert gpt.try_acquire() is None


async def test_rpm_capacity_returns_over_the_window(clock: ManualClock) -> None:
    gpt = limiter(clock, rpm=2)
    gpt.try_acquire()
    gpt.try_acquire()

    # A leaky bucket frees one request every 60 / rpm seconds.
    assert gpt.time_until_capacity() == pytest.approx(30.0)
    clock.advance(29.0)
    assert not gpt.has_capacity()
    clock.advance(1.5)
    assert gpt.has_capacity()

    clock.advance(60.0)
    assert gpt.try_acquire() is not None
    assert gpt.try_acquire() is not None
    assert gpt.try_acquire() is None


# tpm


async def test_tpm_counts_estimated_tokens(clock: ManualClock) -> None:
    gpt = limiter(clock, tpm=1000)

    assert gpt.try_acquire(600) is not None
    assert gpt.has_capacity(400)
    assert not gpt.has_capacity(500)
    assert gpt.try_acquire(500) is None


async def test_tpm_frees_settled_tokens_over_time(clock: ManualClock) -> None:
    gpt = limiter(clock, tpm=1000)
    permit = gpt.try_acquire(600)
    assert permit is not None
    permit.settle(600)
    permit.release()

    assert not gpt.has_capacity(500)
    clock.advance(30.0)  # 500 of the 600 tokens drain in 30 s
    assert gpt.has_capacity(850)
    assert not gpt.has_capacity(950)


async def test_tpm_request_larger_than_limit_never_fits(clock: ManualClock) -> None:
    gpt = limiter(clock, tpm=1000)

    assert not gpt.has_capacity(1001)
    assert math.isinf(gpt.time_until_capacity(1001))
    with pytest.raises(RateLimited) as caught:
        await gpt.acquire(1001, timeout=1000.0)
    assert "never fits" in caught.value.message
    assert caught.value.retry_after == 60.0


async def test_tpm_reservations_block_until_settled(clock: ManualClock) -> None:
    gpt = limiter(clock, tpm=1000)
    first = gpt.try_acquire(700)
    assert first is not None

    waiter = asyncio.create_task(gpt.acquire(700, timeout=10.0))
    await run_pending()
    assert not waiter.done()

    # The first request used far less than its estimate: the second now fits.
    first.settle(100)
    await run_pending()
    assert waiter.done()
    assert gpt.reserved_tokens == 700


# settle


async def test_settle_replaces_the_estimate(clock: ManualClock) -> None:
    gpt = limiter(clock, tpm=1000)
    permit = gpt.try_acquire(800)
    assert permit is not None

    permit.settle(200)

    status = gpt.status()
    assert status.tpm_used == pytest.approx(200.0)
    assert gpt.reserved_tokens == 0
    assert gpt.has_capacity(800)


async def test_settle_above_estimate_charges_the_excess(clock: ManualClock) -> None:
    gpt = limiter(clock, tpm=1000)
    permit = gpt.try_acquire(100)
    assert permit is not None

    permit.settle(1500)

    assert gpt.status().tpm_used == pytest.approx(1500.0)
    assert not gpt.has_capacity(0)
    # 500 tokens over the limit drain at 1000/60 per second.
    assert gpt.time_until_capacity(0) == pytest.approx(30.0)


async def test_settle_again_charges_only_the_increase(clock: ManualClock) -> None:
    gpt = limiter(clock, tpm=1000)
    permit = gpt.try_acquire(500)
    assert permit is not None

    permit.settle(100)
    permit.settle(300)
    permit.settle(250)  # lower than before: ignored

    assert gpt.status().tpm_used == pytest.approx(300.0)
    assert permit.settled_tokens == 300


async def test_release_without_settle_charges_estimate(clock: ManualClock) -> None:
    gpt = limiter(clock, tpm=1000)
    permit = gpt.try_acquire(400)
    assert permit is not None

    permit.release()

    assert gpt.status().tpm_used == pytest.approx(400.0)
    assert gpt.reserved_tokens == 0


async def test_settle_rejects_negative_tokens(clock: ManualClock) -> None:
    permit = limiter(clock, tpm=1000).try_acquire(10)
    assert permit is not None

    with pytest.raises(ValueError, match="real_tokens must be >= 0"):
        permit.settle(-1)


# concurrency and release


async def test_release_is_idempotent(clock: ManualClock) -> None:
    gpt = limiter(clock, max_concurrency=2)
    permit = gpt.try_acquire()
    other = gpt.try_acquire()
    assert permit is not None
    assert other is not None

    permit.release()
    permit.release()

    assert gpt.in_flight == 1


async def test_permit_context_manager_releases(clock: ManualClock) -> None:
    gpt = limiter(clock, max_concurrency=1)

    async with await gpt.acquire() as permit:
        assert gpt.in_flight == 1
        assert not gpt.has_capacity()

    assert permit.released
    assert gpt.in_flight == 0
    assert gpt.has_capacity()


async def test_concurrency_never_exceeds_limit(clock: ManualClock) -> None:
    gpt = limiter(clock, max_concurrency=50)
    in_flight = 0
    peak = 0
    finished = 0

    async def request(index: int) -> None:
        nonlocal in_flight, peak, finished
        async with await gpt.acquire(timeout=10.0):
            in_flight += 1
            peak = max(peak, in_flight)
            for _ in range(index % 5 + 1):
                await asyncio.sleep(0)
            in_flight -= 1
        finished += 1

    await asyncio.gather(*(request(index) for index in range(200)))

    assert peak == 50
    assert finished == 200
    assert gpt.in_flight == 0


# acquire with a timeout


async def test_acquire_waits_for_rpm_capacity(clock: ManualClock) -> None:
    gpt = limiter(clock, rpm=2)
    gpt.try_acquire()
    gpt.try_acquire()

    waiter = asyncio.create_task(gpt.acquire(timeout=40.0))
    await run_pending()
    assert not waiter.done()

    clock.advance(30.5)
    await run_pending()
    assert waiter.done()
    assert waiter.result().estimated_tokens == 0


async def test_acquire_timeout_raises_rate_limited(clock: ManualClock) -> None:
    gpt = limiter(clock, rpm=2)
    gpt.try_acquire()
    gpt.try_acquire()

    # Capacity comes back in 30 s, after the 5 s timeout: no point in waiting.
    with pytest.raises(RateLimited) as caught:
        await gpt.acquire(timeout=5.0)

    assert 'deployment "gpt" rpm 2' in caught.value.message
    assert caught.value.retry_after == pytest.approx(30.0)
    assert caught.value.headers() == {"Retry-After": "30"}


async def test_acquire_timeout_on_concurrency(clock: ManualClock) -> None:
    gpt = limiter(clock, max_concurrency=1)
    held = gpt.try_acquire()
    assert held is not None

    waiter = asyncio.create_task(gpt.acquire(timeout=5.0))
    await run_pending()
    assert not waiter.done()

    clock.advance(5.0)
    await run_pending()
    assert waiter.done()
    error = waiter.exception()
    assert isinstance(error, RateLimited)
    assert 'deployment "gpt" max_concurrency 1' in error.message
    assert error.retry_after == 1.0


async def test_acquire_zero_timeout_fails_at_once(clock: ManualClock) -> None:
    gpt = limiter(clock, rpm=1)
    gpt.try_acquire()

    with pytest.raises(RateLimited):
        await gpt.acquire()


# upstream hold-back


async def test_upstream_zero_remaining_holds_back(clock: ManualClock) -> None:
    gpt = limiter(clock)

    gpt.observe_upstream(UpstreamRateLimit(remaining_requests=0, requests_reset_after=2.0))

    assert not gpt.has_capacity()
    assert gpt.time_until_capacity() == pytest.approx(2.0)
    assert gpt.status().held_back_for == pytest.approx(2.0)
    clock.advance(2.0)
    assert gpt.has_capacity()


async def test_upstream_tokens_below_estimate_hold_back(clock: ManualClock) -> None:
    gpt = limiter(clock)

    gpt.observe_upstream(UpstreamRateLimit(remaining_tokens=500, tokens_reset_after=6.0))

    assert gpt.has_capacity(400)
    assert not gpt.has_capacity(600)
    with pytest.raises(RateLimited) as caught:
        await gpt.acquire(600)
    assert "upstream rate limit" in caught.value.message


async def test_hold_back_for_retry_after(clock: ManualClock) -> None:
    gpt = limiter(clock)

    gpt.hold_back(5.0)

    assert gpt.try_acquire() is None
    clock.advance(5.0)
    assert gpt.try_acquire() is not None


# reconfigure


async def test_reconfigure_keeps_usage(clock: ManualClock) -> None:
    gpt = limiter(clock, rpm=2)
    gpt.try_acquire()
    gpt.try_acquire()

    gpt.reconfigure(LimitSettings(rpm=4))

    assert gpt.status().rpm_used == pytest.approx(2.0)
    assert gpt.status().rpm_limit == 4
    assert gpt.try_acquire() is not None
    assert gpt.try_acquire() is not None
    assert gpt.try_acquire() is None


async def test_reconfigure_wakes_waiters(clock: ManualClock) -> None:
    gpt = limiter(clock, max_concurrency=1)
    held = gpt.try_acquire()
    assert held is not None
    waiter = asyncio.create_task(gpt.acquire(timeout=10.0))
    await run_pending()

    gpt.reconfigure(LimitSettings(max_concurrency=2))
    await run_pending()

    assert waiter.done()
    assert gpt.in_flight == 2


# admission gate


def gate(clock: ManualClock, max_in_flight: int | None = 2, queue_size: int = 1) -> AdmissionGate:
    settings = LimitsConfig(max_in_flight=max_in_flight, queue_size=queue_size, queue_timeout=10.0)
    return AdmissionGate(settings, clock)


async def test_admission_queues_then_admits_in_order(clock: ManualClock) -> None:
    bridge = gate(clock, queue_size=2)
    first = await bridge.admit()
    await bridge.admit()
    queued = [asyncio.create_task(bridge.admit()) for _ in range(2)]
    await run_pending()

    assert bridge.status().queued == 2
    first.release()
    await run_pending()

    assert queued[0].done()
    assert not queued[1].done()
    assert bridge.in_flight == 2


async def test_admission_full_queue_raises(clock: ManualClock) -> None:
    bridge = gate(clock, queue_size=1)
    await bridge.admit()
    await bridge.admit()
    asyncio.create_task(bridge.admit())
    await run_pending()

    with pytest.raises(RateLimited) as caught:
        await bridge.admit()

    assert "wait queue is full" in caught.value.message
    assert caught.value.retry_after == 1.0


async def test_admission_wait_times_out(clock: ManualClock) -> None:
    bridge = gate(clock)
    await bridge.admit()
    await bridge.admit()
    waiter = asyncio.create_task(bridge.admit())
    await run_pending()

    clock.advance(10.0)
    await run_pending()

    error = waiter.exception()
    assert isinstance(error, RateLimited)
    assert "timed out after 10.0 s" in error.message
    assert bridge.status().queued == 0
    assert bridge.in_flight == 2


async def test_admission_cancelled_waiter_leaves_queue(clock: ManualClock) -> None:
    bridge = gate(clock)
    first = await bridge.admit()
    await bridge.admit()
    waiter = asyncio.create_task(bridge.admit())
    await run_pending()

    waiter.cancel()
    await run_pending()
    first.release()

    assert bridge.status().queued == 0
    assert bridge.in_flight == 1


async def test_admission_unlimited_admits_all(clock: ManualClock) -> None:
    bridge = gate(clock, max_in_flight=None, queue_size=0)

    admissions = [await bridge.admit() for _ in range(100)]

    assert bridge.in_flight == 100
    for admission in admissions:
        admission.release()
        admission.release()
    assert bridge.in_flight == 0


async def test_admission_larger_limit_admits_queued(clock: ManualClock) -> None:
    bridge = gate(clock)
    await bridge.admit()
    await bridge.admit()
    waiter = asyncio.create_task(bridge.admit())
    await run_pending()

    bridge.reconfigure(LimitsConfig(max_in_flight=3, queue_size=1, queue_timeout=10.0))
    await run_pending()

    assert waiter.done()
    assert bridge.in_flight == 3


# registry


def deployments(**models: DeploymentConfig) -> dict[str, DeploymentConfig]:
    return dict(models)


GPT = DeploymentConfig(provider="openai", model="gpt-5-mini", rpm=2)
CLAUDE = DeploymentConfig(provider="anthropic", model="claude-haiku-4-5", tpm=1000)
LIMITS = LimitsConfig()


async def test_registry_keeps_unchanged_limiter(clock: ManualClock) -> None:
    registry = LimiterRegistry(clock)
    registry.apply(deployments(gpt=GPT, claude=CLAUDE), {}, LIMITS)
    before = registry.deployment("gpt")
    before.try_acquire()

    registry.apply(deployments(gpt=GPT, claude=CLAUDE), {}, LIMITS)

    assert registry.deployment("gpt") is before
    assert registry.deployment("gpt").status().rpm_used == pytest.approx(1.0)


async def test_registry_adopts_changed_limits(clock: ManualClock) -> None:
    registry = LimiterRegistry(clock)
    registry.apply(deployments(gpt=GPT), {}, LIMITS)
    before = registry.deployment("gpt")
    before.try_acquire()
    before.try_acquire()
    assert not before.has_capacity()

    registry.apply(deployments(gpt=GPT.model_copy(update={"rpm": 3})), {}, LIMITS)

    after = registry.deployment("gpt")
    assert after is before
    assert after.settings.rpm == 3
    assert after.has_capacity()
    assert after.status().rpm_used == pytest.approx(2.0)


async def test_registry_new_model_starts_fresh(clock: ManualClock) -> None:
    registry = LimiterRegistry(clock)
    registry.apply(deployments(gpt=GPT), {}, LIMITS)
    registry.deployment("gpt").try_acquire()
    registry.deployment("gpt").try_acquire()

    registry.apply(deployments(gpt=GPT.model_copy(update={"model": "gpt-5"})), {}, LIMITS)

    assert registry.deployment("gpt").has_capacity()
    assert registry.deployment("gpt").status().rpm_used == 0.0


async def test_registry_removed_deployment_is_gone(clock: ManualClock) -> None:
    registry = LimiterRegistry(clock)
    registry.apply(deployments(gpt=GPT, claude=CLAUDE), {}, LIMITS)

    registry.apply(deployments(gpt=GPT), {}, LIMITS)

    with pytest.raises(KeyError, match='deployment "claude"'):
        registry.deployment("claude")


async def test_registry_clients_and_admission(clock: ManualClock) -> None:
    registry = LimiterRegistry(clock)
    ci_bot = ClientConfig(rpm=60, max_concurrency=4)

    registry.apply({}, {"ci-bot": ci_bot}, LimitsConfig(max_in_flight=8))

    client = registry.client("ci-bot")
    assert client is not None
    assert client.settings == LimitSettings(rpm=60, max_concurrency=4)
    assert registry.client("uid:1000") is None
    assert registry.admission.settings.max_in_flight == 8


async def test_registry_snapshot_reports_usage(clock: ManualClock) -> None:
    registry = LimiterRegistry(clock)
    clients = {"ci-bot": ClientConfig(rpm=60)}
    registry.apply(deployments(gpt=GPT, claude=CLAUDE), clients, LimitsConfig(max_in_flight=8))
    permit = registry.deployment("claude").try_acquire(250)
    assert permit is not None

    snapshot = registry.snapshot()

    assert [status.name for status in snapshot.deployments] == ["claude", "gpt"]
    claude = snapshot.deployments[0]
    assert claude.tpm_used == pytest.approx(250.0)
    assert claude.tpm_limit == 1000
    assert claude.in_flight == 1
    assert claude.rpm_used is None
    assert snapshot.clients[0].rpm_limit == 60
    assert snapshot.admission.max_in_flight == 8


async def test_loop_clock_limiter_counts_real_time() -> None:
    # The default clock is the running loop's own, which aiolimiter reads too.
    gpt = RequestLimiter("deployment", "gpt", LimitSettings(rpm=1))

    assert gpt.try_acquire() is not None
    assert gpt.try_acquire() is None
    assert 59.0 < gpt.time_until_capacity() <= 60.0
