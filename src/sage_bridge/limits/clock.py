"""The clock that limiters, cooldowns and backoff read, so tests can move time by hand.

aiolimiter reads the running loop's `time()`, so every clock here must agree with it:
`LoopClock` is the loop's own clock, and a `ManualClock` is installed on the loop in tests.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Any, Protocol


class Clock(Protocol):
    """Monotonic seconds and a sleep measured on the same time line."""

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class LoopClock:
    """The running event loop's monotonic clock, which aiolimiter's buckets also read."""

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ManualClock:
    """A clock that only moves when a test calls `advance()`.

    `sleep()` never starts a loop timer: a sleeper wakes when `advance()` moves the time past its
    deadline, so a test never waits for real time.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._order = itertools.count()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), future))
        await future

    def advance(self, seconds: float) -> None:
        """Move the time forward and wake every sleeper whose deadline has passed."""
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back: advance({seconds}) needs seconds >= 0")
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    @property
    def sleepers(self) -> int:
        """The number of tasks still sleeping on this clock."""
        return sum(1 for _, _, future in self._sleepers if not future.done())

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make `loop.time()` read this clock, so aiolimiter's buckets leak on manual time too."""
        # The instance attribute shadows the method, as aiolimiter's own tests patch it. Loop
        # timers (asyncio.sleep, wait_for) then fire only once the manual time passes them.
        setattr(loop, "time", self.monotonic)


async def wait_for_future(future: asyncio.Future[Any], timeout: float, clock: Clock) -> bool:
    """Wait until `future` is done or `timeout` seconds pass on `clock`; return whether it is done.

    The future itself is never cancelled here: the caller decides what a timeout means for it.
    """
    if future.done():
        return True
    if timeout <= 0:
        return False

    sleeper = asyncio.ensure_future(clock.sleep(timeout))
    try:
        await asyncio.wait((future, sleeper), return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleeper.cancel()
    return future.done()


async def wait_for_event(event: asyncio.Event, timeout: float, clock: Clock) -> bool:
    """Wait until `event` is set or `timeout` seconds pass on `clock`; return whether it is set."""
    if event.is_set():
        return True

    waiter = asyncio.ensure_future(event.wait())
    try:
        await wait_for_future(waiter, timeout, clock)
    finally:
        waiter.cancel()
    return event.is_set()
