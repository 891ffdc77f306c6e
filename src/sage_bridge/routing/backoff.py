"""When to retry the same deployment, and when to move on to the next target.

The wait before a retry is exponential backoff with full jitter: a uniform draw from
[0, min(max_delay, base_delay * 2**n)] for the n-th retry (n from 0). A `Retry-After` on the
latest response replaces the draw. A wait longer than the policy's `max_delay`, or one that
would end past the request's deadline, is not worth waiting for: the router moves on instead.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass

from sage_bridge.config.schema import RetryPolicyConfig

# Draws a float from [low, high]; random.uniform, or the method of a seeded random.Random.
Uniform = Callable[[float, float], float]

# 2**62 already exceeds any max_delay in seconds; a larger exponent would only risk overflow.
_MAX_EXPONENT = 62


class RetryAction(enum.Enum):
    WAIT = "wait"  # retry the same deployment after `delay` seconds
    MOVE_ON = "move_on"  # stop retrying this deployment and try the next target


@dataclass(frozen=True, slots=True)
class RetryDecision:
    action: RetryAction
    delay: float  # seconds to wait before the retry; 0.0 when moving on
    reason: str  # for the attempt's log line


def full_jitter_delay(retry: int, base: float, cap: float, uniform: Uniform = random.uniform) -> float:
    """Return the wait before retry number `retry` (0 for the first retry), in seconds."""
    if retry < 0:
        raise ValueError(f"retry must be >= 0, got {retry}")
    ceiling = min(cap, base * 2.0 ** min(retry, _MAX_EXPONENT))
    return uniform(0.0, ceiling)


def decide_retry(
    policy: RetryPolicyConfig,
    attempts_made: int,
    *,
    now: float,
    deadline: float | None = None,
    retry_after: float | None = None,
    uniform: Uniform = random.uniform,
) -> RetryDecision:
    """Decide what follows a retryable failure of one deployment.

    `attempts_made` counts the attempts at this deployment so far, the failed one included.
    `now` and `deadline` are monotonic seconds; `retry_after` is the seconds the latest
    response asked for, if it asked.
    """
    if attempts_made >= policy.attempts:
        return _move_on(f"{attempts_made} of {policy.attempts} attempts made")

    if retry_after is not None:
        delay = max(0.0, retry_after)
        if delay > policy.max_delay:
            return _move_on(f"upstream asked to wait {delay:g} s, more than max_delay {policy.max_delay:g} s")
    else:
        delay = full_jitter_delay(attempts_made - 1, policy.base_delay, policy.max_delay, uniform)

    if deadline is not None and now + delay >= deadline:
        return _move_on(f"a {delay:.3g} s wait would pass the request deadline")
    reason = f"retry {attempts_made} of {policy.attempts - 1} in {delay:.3g} s"
    return RetryDecision(RetryAction.WAIT, delay, reason)


def request_deadline(policy: RetryPolicyConfig, started_at: float) -> float | None:
    """Return the monotonic time by which the whole request must finish, or None for no limit."""
    return None if policy.deadline is None else started_at + policy.deadline


def attempt_timeout(policy: RetryPolicyConfig, now: float, deadline: float | None) -> float | None:
    """Return the seconds one attempt may take: the policy's attempt_timeout, cut at the deadline."""
    limits = [policy.attempt_timeout] if policy.attempt_timeout is not None else []
    if deadline is not None:
        limits.append(max(0.0, deadline - now))
    return min(limits, default=None)


def _move_on(reason: str) -> RetryDecision:
    return RetryDecision(RetryAction.MOVE_ON, 0.0, reason)
