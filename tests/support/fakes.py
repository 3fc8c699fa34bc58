"""Fakes: a clock driven by hand, a clock shifted by the test, a queue that records calls."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

from botocore.exceptions import ClientError

from consumer.aws.request_queue import ReceivedMessage


class FakeClock:
    """Time that moves only when told to."""

    def __init__(self) -> None:
        self.now_s = 1000.0
        self.start = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)

    def monotonic(self) -> float:
        return self.now_s

    def now(self) -> dt.datetime:
        return self.start + dt.timedelta(seconds=self.now_s - 1000.0)

    async def sleep(self, seconds: float) -> None:
        self.now_s += seconds
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


class FakeQueue:
    """Records visibility changes; can fail them with an AWS error code."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, int]] = []
        self.fail_with: str | None = None
        self.hold: asyncio.Event | None = None

    async def set_visibility(self, message: ReceivedMessage, seconds: int) -> None:
        if self.hold is not None:
            await self.hold.wait()
        if self.fail_with is not None:
            raise ClientError(
                {"Error": {"Code": self.fail_with, "Message": "no"}}, "ChangeMessageVisibility"
            )
        self.changes.append((message.message_id, seconds))


def message(
    message_id: str = "m1", received_at: float = 1000.0, **attributes: Any
) -> ReceivedMessage:
    """A received message as the worker sees it."""
    return ReceivedMessage(
        message_id=message_id,
        receipt_handle=f"rh-{message_id}",
        body="{}",
        attributes={k: str(v) for k, v in attributes.items()},
        message_attributes={},
        received_at=received_at,
        received_at_ms=1_700_000_000_000,
    )


class ShiftedClock:
    """The system clock plus an offset the test moves forward at will.

    Sleeps are real (so the loop runs as in production) but capped, so a
    loop sleeping on the shifted clock notices a jump quickly.
    """

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.offset)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(min(seconds, 0.1))

    def advance(self, seconds: float) -> None:
        self.offset += seconds
