"""Cooldowns: a deployment that keeps failing is skipped for a while, then probed once.

Each deployment has a circuit breaker. `failures` counted failures within `window` seconds (or
one auth or permission error) open it: the deployment is skipped for `cooldown` seconds. After
that it is half-open and lets exactly one probe request through. The probe's success closes the
breaker; its failure opens it for another cooldown.

Failures caused by the request itself (context length, content policy, invalid request) are not
counted. Results of attempts that began before the breaker last opened are ignored, so a slow
request from before a cooldown cannot close or reopen it.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType

from sage_bridge.config.schema import DeploymentConfig
from sage_bridge.errors import ErrorKind
from sage_bridge.limits.clock import Clock, LoopClock
from sage_bridge.limits.registry import DeploymentIdentity

logger = logging.getLogger(__name__)


class BreakerState(enum.Enum):
    CLOSED = "closed"  # requests flow; failures are counted
    OPEN = "open"  # the deployment is skipped until its cooldown ends
    HALF_OPEN = "half_open"  # the cooldown ended; one probe request may go through


@dataclass(frozen=True, slots=True)
class CooldownPolicy:
    failures: int = 3  # counted failures within `window` that open the breaker
    window: float = 60.0  # seconds
    cooldown: float = 30.0  # seconds a deployment is skipped after its breaker opens
    open_at_once: frozenset[ErrorKind] = field(
        default_factory=lambda: frozenset({ErrorKind.AUTH, ErrorKind.PERMISSION})
    )
    not_counted: frozenset[ErrorKind] = field(
        default_factory=lambda: frozenset(
            {ErrorKind.CONTEXT_LENGTH, ErrorKind.CONTENT_POLICY, ErrorKind.INVALID_REQUEST}
        )
    )

    def __post_init__(self) -> None:
        if self.failures < 1:
            raise ValueError(f"cooldown failures must be >= 1, got {self.failures}")
        if self.window <= 0:
            raise ValueError(f"cooldown window must be > 0 seconds, got {self.window}")
        if self.cooldown < 0:
            raise ValueError(f"cooldown must be >= 0 seconds, got {self.cooldown}")


@dataclass(frozen=True, slots=True)
class CooldownStatus:
    deployment: str
    state: BreakerState
    failures_in_window: int
    cooldown_remaining: float  # seconds until a probe may go through; 0 unless open
    probe_in_flight: bool


class TrackedAttempt:
    """One attempt let through by a breaker; only the first outcome reported for it counts.

    Leaving the context manager without an outcome counts as abandoned: no verdict, and a probe
    slot is freed for the next request.
    """

    __slots__ = ("_breaker", "_generation", "is_probe", "finished")

    def __init__(self, breaker: DeploymentCooldown, generation: int, is_probe: bool) -> None:
        self._breaker = breaker
        self._generation = generation
        self.is_probe = is_probe
        self.finished = False

    def succeeded(self) -> None:
        if self._finish():
            self._breaker._on_success(self.is_probe)

    def failed(self, kind: ErrorKind) -> None:
        if self._finish():
            self._breaker._on_failure(kind, self._generation, self.is_probe)

    def abandoned(self) -> None:
        """End the attempt without a verdict, as when the client went away or it was cancelled."""
        if self._finish() and self.is_probe:
            self._breaker._end_probe(self._generation)

    def _finish(self) -> bool:
        if self.finished:
            return False
        self.finished = True
        return True

    def __enter__(self) -> TrackedAttempt:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.abandoned()


class DeploymentCooldown:
    """The circuit breaker of one deployment."""

    def __init__(self, name: str, policy: CooldownPolicy, clock: Clock) -> None:
        self.name = name
        self.policy = policy
        self._clock = clock
        self._failures: deque[float] = deque()
        self._opened_at: float | None = None
        self._generation = 0  # increases each time the breaker opens
        self._probe_in_flight = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock.monotonic() < self._opened_at + self.policy.cooldown:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def is_available(self) -> bool:
        """Return whether `begin_attempt()` would let a request through now."""
        state = self.state
        return state is BreakerState.CLOSED or (state is BreakerState.HALF_OPEN and not self._probe_in_flight)

    def begin_attempt(self) -> TrackedAttempt | None:
        """Let one attempt through, or return None while cooling down or a probe is running."""
        state = self.state
        if state is BreakerState.CLOSED:
            return TrackedAttempt(self, self._generation, is_probe=False)
        if state is BreakerState.OPEN or self._probe_in_flight:
            return None
        self._probe_in_flight = True
        logger.info('deployment "%s" cooldown is over; sending one probe request', self.name)
        return TrackedAttempt(self, self._generation, is_probe=True)

    def status(self) -> CooldownStatus:
        state = self.state
        remaining = 0.0
        if state is BreakerState.OPEN and self._opened_at is not None:
            remaining = self._opened_at + self.policy.cooldown - self._clock.monotonic()
        self._forget_old_failures()
        return CooldownStatus(self.name, state, len(self._failures), remaining, self._probe_in_flight)

    def _on_success(self, is_probe: bool) -> None:
        # Only a probe can close the breaker. A probe always belongs to the current generation,
        # because nothing else begins or reopens the breaker while it runs.
        if not is_probe:
            return
        logger.info('deployment "%s" probe succeeded; it is back in rotation', self.name)
        self._opened_at = None
        self._probe_in_flight = False
        self._failures.clear()

    def _on_failure(self, kind: ErrorKind, generation: int, is_probe: bool) -> None:
        if generation != self._generation:
            return
        if kind in self.policy.not_counted:
            self._end_probe(generation)
            return
        if is_probe:
            self._open(f"its probe request failed ({kind.label})")
            return
        if kind in self.policy.open_at_once:
            self._open(f'an error of kind "{kind.label}", which opens the breaker at once')
            return

        self._failures.append(self._clock.monotonic())
        self._forget_old_failures()
        if len(self._failures) >= self.policy.failures:
            self._open(f"{len(self._failures)} failures within {self.policy.window:g} s (last: {kind.label})")

    def _end_probe(self, generation: int) -> None:
        if generation == self._generation:
            self._probe_in_flight = False

    def _open(self, reason: str) -> None:
        self._opened_at = self._clock.monotonic()
        self._generation += 1
        self._probe_in_flight = False
        self._failures.clear()
        logger.warning(
            'deployment "%s" cooling down for %g s after %s', self.name, self.policy.cooldown, reason
        )

    def _forget_old_failures(self) -> None:
        horizon = self._clock.monotonic() - self.policy.window
        while self._failures and self._failures[0] <= horizon:
            self._failures.popleft()


class CooldownRegistry:
    """The breakers of every deployment, kept across reloads while a deployment's identity stays."""

    def __init__(self, policy: CooldownPolicy | None = None, clock: Clock | None = None) -> None:
        self.policy = policy or CooldownPolicy()
        self._clock: Clock = clock or LoopClock()
        self._breakers: dict[DeploymentIdentity, DeploymentCooldown] = {}
        self._by_name: dict[str, DeploymentCooldown] = {}

    def apply(
        self, deployments: Mapping[str, DeploymentConfig], policy: CooldownPolicy | None = None
    ) -> None:
        """Match breakers to a new config; a changed policy applies to the kept breakers too."""
        if policy is not None:
            self.policy = policy
        breakers: dict[DeploymentIdentity, DeploymentCooldown] = {}
        for name, config in deployments.items():
            identity = DeploymentIdentity.of(name, config)
            breaker = self._breakers.get(identity) or DeploymentCooldown(name, self.policy, self._clock)
            breaker.policy = self.policy
            breakers[identity] = breaker
        self._breakers = breakers
        self._by_name = {identity.name: breaker for identity, breaker in breakers.items()}

    def get(self, name: str) -> DeploymentCooldown:
        """Return the breaker of deployment `name`; raise KeyError if the config has none."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(
                f'no cooldown state for deployment "{name}": it is not in the applied config'
            ) from None

    def snapshot(self) -> tuple[CooldownStatus, ...]:
        return tuple(self._by_name[name].status() for name in sorted(self._by_name))
