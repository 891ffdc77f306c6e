"""Request, token and concurrency limits for one deployment or one client.

`rpm` and `tpm` are aiolimiter leaky buckets over a 60-second period: up to the limit may pass in
a burst, and capacity then comes back at limit/60 per second. `max_concurrency` caps permits not
yet released.

Tokens are counted in two places. A permit reserves its estimated tokens in `reserved_tokens`,
which counts against tpm but is not in the bucket. `Permit.settle(real_tokens)` drops the
reservation and puts the real usage into the bucket, so an over-estimate is never charged and
needs no refund, which aiolimiter cannot do. Usage above the estimate is charged at once, even
past the limit, and the bucket then drains it before the next request fits.

Every method must run on the event loop thread: aiolimiter reads the running loop's time().
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from aiolimiter import AsyncLimiter

from sage_bridge.config.schema import ClientConfig, DeploymentConfig
from sage_bridge.errors import RateLimited
from sage_bridge.limits.clock import Clock, LoopClock, wait_for_event
from sage_bridge.limits.upstream_headers import UpstreamRateLimit, hold_back_until

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 60.0
# Retry-After for a limit that frees on release or settlement rather than at a known time.
UNKNOWN_WAIT_RETRY_AFTER = 1.0
# Floor for one wait in acquire(), so float rounding in the bucket cannot make it spin.
_MIN_WAIT = 0.001

Scope = Literal["deployment", "client"]


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """The limits of one deployment or client; None means unlimited."""

    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None

    @classmethod
    def of(cls, config: DeploymentConfig | ClientConfig) -> LimitSettings:
        return cls(rpm=config.rpm, tpm=config.tpm, max_concurrency=config.max_concurrency)


@dataclass(frozen=True, slots=True)
class LimiterStatus:
    """One limiter's usage for `bridgectl status`; a `*_used` value is None when unlimited."""

    scope: Scope
    name: str
    rpm_used: float | None
    rpm_limit: int | None
    tpm_used: float | None  # the bucket's level plus the estimates of unsettled permits
    tpm_limit: int | None
    in_flight: int
    max_concurrency: int | None
    held_back_for: float  # seconds until an upstream rate limit or Retry-After hold-back ends


@dataclass(frozen=True, slots=True)
class _Block:
    limit: str  # the limit that was hit, for messages: 'deployment "gpt" rpm 2'
    wait: float | None  # seconds until it allows the request; None: until a release or settle


class _Bucket(AsyncLimiter):
    """An aiolimiter bucket that can also record usage that already happened."""

    __slots__ = ()

    def level(self) -> float:
        # _leak() drains what the elapsed time allows; the bucket math stays aiolimiter's own.
        self._leak()
        return self._level

    def add(self, amount: float) -> None:
        # AsyncLimiter.acquire waits for room and rejects amounts above max_rate. Usage that
        # already happened has to be recorded at once, even past the limit, and then drains.
        self._leak()
        self._level += amount

    def seconds_until_room(self, amount: float) -> float:
        excess = self.level() + amount - self.max_rate
        return max(0.0, excess * self.time_period / self.max_rate)


class Permit:
    """One admitted request: a request counted in rpm, tokens reserved, a concurrency slot held.

    Use it as a context manager, or call `release()` when the attempt is over. Call `settle()`
    with the real token usage once it is known. A permit released unsettled is charged its
    estimate, so a lost usage count cannot let traffic exceed tpm.
    """

    __slots__ = ("_limiter", "estimated_tokens", "settled_tokens", "released")

    def __init__(self, limiter: RequestLimiter, estimated_tokens: int) -> None:
        self._limiter = limiter
        self.estimated_tokens = estimated_tokens
        self.settled_tokens: int | None = None
        self.released = False

    def settle(self, real_tokens: int) -> None:
        """Replace the estimate with the real usage.

        Call again with a larger total as a stream goes on: only the increase is charged.
        A smaller total than before is ignored, since charged tokens cannot be taken back.
        """
        if real_tokens < 0:
            raise ValueError(f"real_tokens must be >= 0, got {real_tokens}")
        self._limiter._settle(self, real_tokens)

    def release(self) -> None:
        """Free the concurrency slot; calling it again does nothing."""
        if not self.released:
            self.released = True
            self._limiter._release(self)

    def __enter__(self) -> Permit:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    async def __aenter__(self) -> Permit:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class RequestLimiter:
    """The rpm, tpm and concurrency limits of one deployment or client, plus upstream hold-back."""

    def __init__(self, scope: Scope, name: str, settings: LimitSettings, clock: Clock | None = None) -> None:
        self.scope = scope
        self.name = name
        self.settings = settings
        self._clock: Clock = clock or LoopClock()
        self._rpm = _new_bucket(settings.rpm)
        self._tpm = _new_bucket(settings.tpm)
        self.in_flight = 0
        self.reserved_tokens = 0
        self._changed = asyncio.Event()
        self._upstream: tuple[UpstreamRateLimit, float] | None = None
        self._held_until = -math.inf

    @property
    def label(self) -> str:
        return f'{self.scope} "{self.name}"'

    def has_capacity(self, tokens: int = 0) -> bool:
        """Return whether a request estimated at `tokens` would be admitted now."""
        return not self._blocks(tokens)

    def time_until_capacity(self, tokens: int = 0) -> float:
        """Return the seconds until rpm, tpm and upstream hold-back allow `tokens`.

        A full concurrency limit is not counted, because a slot frees on release, not at a known
        time. The result is math.inf when `tokens` is larger than the whole tpm limit.
        """
        waits = [block.wait for block in self._blocks(tokens) if block.wait is not None]
        return max(waits, default=0.0)

    def try_acquire(self, tokens: int = 0) -> Permit | None:
        """Admit a request estimated at `tokens` now, or return None without waiting."""
        if self._blocks(tokens):
            return None
        return self._grant(tokens)

    async def acquire(self, tokens: int = 0, timeout: float = 0.0) -> Permit:
        """Admit a request estimated at `tokens`, waiting up to `timeout` seconds.

        Raise RateLimited at once when a limit cannot allow the request within the timeout,
        naming the limits hit and with the seconds until a retry may succeed.
        """
        # NOTE: waiters are not served in arrival order. Each one re-checks after every release,
        # settlement or wait, so smaller requests can pass a large one again and again.
        deadline = self._clock.monotonic() + timeout
        while True:
            blocks = self._blocks(tokens)
            if not blocks:
                return self._grant(tokens)

            remaining = deadline - self._clock.monotonic()
            known_wait = max((block.wait for block in blocks if block.wait is not None), default=None)
            if remaining <= 0 or (known_wait is not None and known_wait > remaining):
                raise self._rate_limited(blocks, known_wait)

            sleep_for = remaining if known_wait is None else max(known_wait, _MIN_WAIT)
            await wait_for_event(self._changed, min(sleep_for, remaining), self._clock)

    def observe_upstream(self, limits: UpstreamRateLimit) -> None:
        """Remember the provider's latest rate-limit headers, read just now."""
        self._upstream = (limits, self._clock.monotonic())

    def hold_back(self, seconds: float) -> None:
        """Admit nothing for `seconds`, as the Retry-After header of a provider's 429 requests."""
        self._held_until = max(self._held_until, self._clock.monotonic() + seconds)

    def reconfigure(self, settings: LimitSettings) -> None:
        """Adopt new limits, keeping the usage counted so far in the current window."""
        if settings == self.settings:
            return
        logger.info("%s limits changed from %s to %s", self.label, self.settings, settings)
        if settings.rpm != self.settings.rpm:
            self._rpm = _new_bucket(settings.rpm, carry_over=self._rpm)
        if settings.tpm != self.settings.tpm:
            self._tpm = _new_bucket(settings.tpm, carry_over=self._tpm)
        self.settings = settings
        self._notify()

    def status(self) -> LimiterStatus:
        return LimiterStatus(
            scope=self.scope,
            name=self.name,
            rpm_used=None if self._rpm is None else self._rpm.level(),
            rpm_limit=self.settings.rpm,
            tpm_used=None if self._tpm is None else self._tpm.level() + self.reserved_tokens,
            tpm_limit=self.settings.tpm,
            in_flight=self.in_flight,
            max_concurrency=self.settings.max_concurrency,
            held_back_for=max(0.0, self._hold_back_deadline(0) - self._clock.monotonic()),
        )

    def _blocks(self, tokens: int) -> list[_Block]:
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        blocks: list[_Block] = []
        held_for = self._hold_back_deadline(tokens) - self._clock.monotonic()
        if held_for > 0:
            blocks.append(_Block(f"{self.label} upstream rate limit", held_for))
        if self._rpm is not None and not self._rpm.has_capacity(1):
            blocks.append(_Block(f"{self.label} rpm {self.settings.rpm}", self._rpm.seconds_until_room(1)))
        if self._tpm is not None:
            blocks.extend(self._tpm_blocks(self._tpm, tokens))
        limit = self.settings.max_concurrency
        if limit is not None and self.in_flight >= limit:
            blocks.append(_Block(f"{self.label} max_concurrency {limit}", None))
        return blocks

    def _tpm_blocks(self, bucket: _Bucket, tokens: int) -> list[_Block]:
        name = f"{self.label} tpm {self.settings.tpm}"
        if tokens > bucket.max_rate:
            return [_Block(f"{name} (a request of {tokens} estimated tokens never fits)", math.inf)]
        needed = self.reserved_tokens + tokens
        if needed > bucket.max_rate:
            # The reservations alone fill the limit: only a settlement or release can help.
            return [_Block(name, None)]
        if not bucket.has_capacity(needed):
            return [_Block(name, bucket.seconds_until_room(needed))]
        return []

    def _hold_back_deadline(self, tokens: int) -> float:
        deadline = self._held_until
        if self._upstream is not None:
            limits, observed_at = self._upstream
            deadline = max(deadline, hold_back_until(limits, observed_at, tokens) or -math.inf)
        return deadline

    def _grant(self, tokens: int) -> Permit:
        if self._rpm is not None:
            self._rpm.add(1)
        self.reserved_tokens += tokens
        self.in_flight += 1
        return Permit(self, tokens)

    def _settle(self, permit: Permit, real_tokens: int) -> None:
        if permit.settled_tokens is None:
            self.reserved_tokens -= permit.estimated_tokens
            charge = real_tokens
        else:
            charge = max(0, real_tokens - permit.settled_tokens)
        if self._tpm is not None and charge:
            self._tpm.add(charge)
        permit.settled_tokens = max(real_tokens, permit.settled_tokens or 0)
        self._notify()

    def _release(self, permit: Permit) -> None:
        if permit.settled_tokens is None:
            self._settle(permit, permit.estimated_tokens)
        self.in_flight -= 1
        self._notify()

    def _notify(self) -> None:
        # Waiters hold the old event; setting it wakes them all, and later waiters get a new one.
        self._changed.set()
        self._changed = asyncio.Event()

    def _rate_limited(self, blocks: list[_Block], known_wait: float | None) -> RateLimited:
        if known_wait is None:
            retry_after = UNKNOWN_WAIT_RETRY_AFTER
        elif math.isinf(known_wait):
            retry_after = WINDOW_SECONDS
        else:
            retry_after = known_wait
        limits = "; ".join(block.limit for block in blocks)
        message = f"rate limit reached: {limits}; retry in {retry_after:.1f} s"
        return RateLimited(message, retry_after=retry_after)


def _new_bucket(limit: int | None, carry_over: _Bucket | None = None) -> _Bucket | None:
    if limit is None:
        return None
    bucket = _Bucket(limit, WINDOW_SECONDS)
    if carry_over is not None:
        bucket.add(carry_over.level())
    return bucket
