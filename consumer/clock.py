"""Time, injected: the worker, the heartbeat and the job timings read it here.

Tests hand in a fake clock to drive the heartbeat without waiting; production
uses :class:`SystemClock`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Protocol


class Clock(Protocol):
    """The three questions the consumer asks about time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (for durations and deadlines)."""
        ...

    def now(self) -> dt.datetime:
        """The current wall-clock time, timezone-aware."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds`."""
        ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        """:func:`time.monotonic`."""
        return time.monotonic()

    def now(self) -> dt.datetime:
        """The current UTC time."""
        return dt.datetime.now(dt.UTC)

    async def sleep(self, seconds: float) -> None:
        """:func:`asyncio.sleep`."""
        await asyncio.sleep(seconds)


def epoch_ms(moment: dt.datetime) -> int:
    """Milliseconds since the Unix epoch, as SQS writes ``SentTimestamp``."""
    return int(moment.timestamp() * 1000)
