"""Small terminal helpers: a spinner that only spins for people, and durations."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import TextIO

FRAMES = "|/-\\"
FRAME_S = 0.1


async def _spin(stream: TextIO, label: str) -> None:
    started = time.monotonic()
    frame = 0
    while True:
        elapsed = time.monotonic() - started
        stream.write(f"\r{FRAMES[frame % len(FRAMES)]} {label} ({elapsed:.0f}s)")
        stream.flush()
        frame += 1
        await asyncio.sleep(FRAME_S)


@contextlib.asynccontextmanager
async def spinner(stream: TextIO, label: str) -> AsyncIterator[None]:
    """Show `label` with a spinner on `stream` while the block runs, on a TTY only.

    Logs and pipes get nothing: a spinner there is only noise.
    """
    if not stream.isatty():
        yield
        return
    task = asyncio.create_task(_spin(stream, label))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        stream.write("\r\x1b[2K")
        stream.flush()


def duration(seconds: float | None) -> str:
    """``45s``, ``12m03s``, ``5h07m`` or ``3d04h``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"
