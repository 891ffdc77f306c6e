"""The bridge-wide cap on requests in flight, with a bounded first-in, first-out wait queue.

Settings come from the `limits:` section: `max_in_flight` (None: no cap), `queue_size` (requests
that may wait for a slot) and `queue_timeout` (seconds one request waits before RateLimited).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from types import TracebackType

from sage_bridge.config.schema import LimitsConfig
from sage_bridge.errors import RateLimited
from sage_bridge.limits.clock import Clock, LoopClock, wait_for_future

logger = logging.getLogger(__name__)

# Retry-After sent when the queue is full or a wait timed out: a slot frees whenever any request
# ends, so there is no better estimate.
QUEUE_RETRY_AFTER = 1.0


@dataclass(frozen=True, slots=True)
class AdmissionStatus:
    in_flight: int
    max_in_flight: int | None
    queued: int
    queue_size: int


class Admission:
    """One request's slot under the global cap; release it when the request ends."""

    __slots__ = ("_gate", "released")

    def __init__(self, gate: AdmissionGate) -> None:
        self._gate = gate
        self.released = False

    def release(self) -> None:
        """Free the slot for the next queued request; calling it again does nothing."""
        if not self.released:
            self.released = True
            self._gate._free_slot()

    def __enter__(self) -> Admission:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    async def __aenter__(self) -> Admission:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class AdmissionGate:
    """Admits requests up to `max_in_flight`; later ones wait in arrival order."""

    def __init__(self, settings: LimitsConfig | None = None, clock: Clock | None = None) -> None:
        self.settings = settings or LimitsConfig()
        self._clock: Clock = clock or LoopClock()
        self.in_flight = 0
        self._queue: deque[asyncio.Future[None]] = deque()

    async def admit(self) -> Admission:
        """Take a slot, waiting up to `queue_timeout` in the queue; raise RateLimited otherwise."""
        if self._has_free_slot() and not self._queue:
            self.in_flight += 1
            return Admission(self)

        if len(self._queue) >= self.settings.queue_size:
            raise RateLimited(
                f"the bridge has {self.in_flight} requests in flight (max_in_flight "
                f"{self.settings.max_in_flight}) and its wait queue is full ({self.settings.queue_size} "
                "waiting, limits.queue_size); retry later",
                retry_after=QUEUE_RETRY_AFTER,
            )

        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(slot)
        try:
            admitted = await wait_for_future(slot, self.settings.queue_timeout, self._clock)
        except BaseException:
            self._leave_queue(slot)
            raise

        if not admitted:
            self._leave_queue(slot)
            raise RateLimited(
                f"timed out after {self.settings.queue_timeout} s (limits.queue_timeout) waiting for one "
                f"of {self.settings.max_in_flight} request slots (limits.max_in_flight)",
                retry_after=QUEUE_RETRY_AFTER,
            )
        return Admission(self)

    def reconfigure(self, settings: LimitsConfig) -> None:
        """Adopt new limits; a larger max_in_flight admits queued requests at once."""
        if settings == self.settings:
            return
        logger.info("admission limits changed from %s to %s", self.settings, settings)
        self.settings = settings
        self._admit_queued()

    def status(self) -> AdmissionStatus:
        return AdmissionStatus(
            in_flight=self.in_flight,
            max_in_flight=self.settings.max_in_flight,
            queued=sum(1 for slot in self._queue if not slot.done()),
            queue_size=self.settings.queue_size,
        )

    def _has_free_slot(self) -> bool:
        limit = self.settings.max_in_flight
        return limit is None or self.in_flight < limit

    def _free_slot(self) -> None:
        self.in_flight -= 1
        self._admit_queued()

    def _admit_queued(self) -> None:
        # A slot is handed to the first waiter directly, so a newcomer cannot take it first.
        while self._queue and self._has_free_slot():
            slot = self._queue.popleft()
            if slot.done():
                continue
            self.in_flight += 1
            slot.set_result(None)

    def _leave_queue(self, slot: asyncio.Future[None]) -> None:
        if slot.done() and not slot.cancelled():
            # The slot was handed over just as the wait ended: pass it on to the next waiter.
            self._free_slot()
            return
        slot.cancel()
        try:
            self._queue.remove(slot)
        except ValueError:
            pass
