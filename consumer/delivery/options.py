"""How the receive loop behaves, and the slots that bound what it holds."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

# How long a stopped generation may take to come back before the worker
# counts the GPU as wedged. Read at use time, so tests can lower it.
STOP_GRACE_S = 60.0


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """How the loop behaves, apart from the settings.

    Attributes:
        burst: stop (exit 0) once a receive finds nothing and no job is left;
            for tests, benchmarks and the demo.
        poll_wait_s: the long-poll wait of each receive (SQS allows 0-20).
        prefetch: requests held beyond the one generating.
        loop_backoff_base_s, loop_backoff_max_s: the jittered backoff of the
            loop's own failing AWS calls.
        stop_grace_s: how long a stopped generation may take to come back
            before the GPU counts as wedged; ``None`` for :data:`STOP_GRACE_S`.
        priority_check_s: with a priority queue, the request queue's long
            poll is cut to this, the longest a priority request waits for an
            idle worker to look again.
    """

    burst: bool = False
    poll_wait_s: int = 20
    prefetch: int = 1
    loop_backoff_base_s: float = 1.0
    loop_backoff_max_s: float = 60.0
    stop_grace_s: float | None = None
    priority_check_s: int = 1

    def stop_grace(self) -> float:
        """The stop grace in seconds."""
        return STOP_GRACE_S if self.stop_grace_s is None else self.stop_grace_s


class Slots:
    """Requests held before or on the GPU: the one generating plus the prefetch."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._freed = asyncio.Event()

    async def wait_free(self) -> int:
        """Wait until a slot is free; how many are."""
        while self.used >= self.capacity:
            self._freed.clear()
            await self._freed.wait()
        return self.capacity - self.used

    def take(self) -> Callable[[], None]:
        """Take a slot; the function that gives it back (once)."""
        self.used += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.used -= 1
                self._freed.set()

        return release
