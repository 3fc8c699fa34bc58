"""Held results: a job's calls carried through an outage of their service.

When an upload, a publish, a delete or a dead-letter copy fails because its
service is out (:class:`~consumer.delivery.outage.ServiceOut`), the job does
not fail: it keeps what it has (the drawn pictures stay in memory) and waits
for the service's probe to find it back, then calls again. The heartbeat
keeps its request hidden meanwhile. A job is held for at most
``OUTAGE_HOLD_S`` from its first outage; then :class:`HoldEnded` is raised
and the runner releases the request at no cost.

What is held is bounded by ``HELD_MAX_COUNT`` jobs and ``HELD_MAX_BYTES`` of
decoded pictures together. A job that would pass the bound is not held: its
pictures are dropped and its request released at no cost, to be drawn again
after the outage. A paused worker takes no new request, so only the jobs
already taken when the outage began (the one generating and the prefetched
one) can be held; the bound matters only for unusual settings.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog

from consumer.clock import Clock
from consumer.delivery.outage import Outages, Service, ServiceOut
from consumer.errors import TransientError
from consumer.settings import Settings

log = structlog.get_logger(__name__)

T = TypeVar("T")


class HoldEnded(TransientError):
    """A job could not be (or no longer be) held through an outage: release it."""


class HeldResults:
    """The jobs and bytes held through outages now, within their bounds."""

    def __init__(self, max_count: int, max_bytes: int) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.count = 0
        self.bytes = 0

    def take(self, size: int) -> bool:
        """Hold one more job of `size` bytes, if within the bounds."""
        if self.count + 1 > self.max_count or self.bytes + size > self.max_bytes:
            return False
        self.count += 1
        self.bytes += size
        return True

    def give(self, size: int) -> None:
        """A job of `size` bytes is no longer held."""
        self.count = max(0, self.count - 1)
        self.bytes = max(0, self.bytes - size)


@dataclass
class Hold:
    """One job's passage through outages.

    Attributes:
        size: the bytes the job keeps while held (its decoded pictures; 0
            before they are drawn).
        since: monotonic time of the job's first outage, ``None`` before.
    """

    outages: Outages
    store: HeldResults
    clock: Clock
    hold_s: float
    size: int = 0
    since: float | None = None
    _taken: int | None = None

    async def call(self, service: Service, step: Callable[[], Awaitable[T]]) -> T:
        """Run `step` (a call to `service`), waiting out outages of it."""
        while True:
            try:
                with self.outages.guard(service):
                    return await step()
            except ServiceOut:
                await self._wait(service)

    def end(self) -> None:
        """The job is done with holding: free its place in the store."""
        if self._taken is not None:
            self.store.give(self._taken)
            self._taken = None

    async def _wait(self, service: Service) -> None:
        now = self.clock.monotonic()
        if self.since is None:
            self.since = now
            log.info("job_held", service=service.value, hold_s=self.hold_s)
        if self._taken is None:
            if not self.store.take(self.size):
                raise HoldEnded(f"{service.value} is out and the held results are at their bound")
            self._taken = self.size
        # Until the deadline by the clock: a sleep may end early (a clock
        # moved on by a test, a loop woken for another reason).
        while self.outages.is_out(service):
            left = self.since + self.hold_s - self.clock.monotonic()
            if left <= 0:
                raise HoldEnded(f"{service.value} stayed out for the whole OUTAGE_HOLD_S")
            await self.outages.wait_back(service, left)


class Holds:
    """The holds of a runner's jobs, by receipt handle, sharing one store."""

    def __init__(self, outages: Outages, settings: Settings, clock: Clock) -> None:
        self.store = HeldResults(settings.held_max_count, settings.held_max_bytes)
        self._outages = outages
        self._clock = clock
        self._hold_s = settings.outage_hold_s
        self._holds: dict[str, Hold] = {}

    def of(self, key: str) -> Hold:
        """The hold of the job of receipt handle `key` (made on first use)."""
        if key not in self._holds:
            self._holds[key] = Hold(self._outages, self.store, self._clock, self._hold_s)
        return self._holds[key]

    def end(self, key: str) -> None:
        """The job of `key` has ended; free what it held."""
        hold = self._holds.pop(key, None)
        if hold is not None:
            hold.end()
