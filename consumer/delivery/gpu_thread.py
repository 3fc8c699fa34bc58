"""The one thread that talks to the GPU, awaited from the event loop.

Generation is blocking and must be serial, so it runs on a single dedicated
thread; the event loop awaits its futures and never blocks. A process that
exits while this thread is inside torch dies of SIGABRT, so a drain stops
the running generation (its stop event) and waits for the thread to come
back before exiting. The thread is still a daemon, so that a wedged GPU call
cannot hold a fatal exit forever.

Work queued behind the running call can be withdrawn (its future cancelled)
until the thread picks it up; that is how a drain releases a prefetched job.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Timed(Generic[T]):
    """A result and when the thread started and finished computing it (monotonic)."""

    value: T
    started: float
    finished: float

    @property
    def seconds(self) -> float:
        """Time spent computing, not waiting in line."""
        return self.finished - self.started


_Item = tuple[concurrent.futures.Future[Any], contextvars.Context, Callable[[], Any]]


class GpuThread:
    """A single daemon thread running submitted calls one at a time, in order."""

    def __init__(self, name: str = "gpu") -> None:
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._busy = False
        self._thread.start()

    @property
    def busy(self) -> bool:
        """Whether a call is running right now."""
        return self._busy

    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[Timed[T]]:
        """Queue ``fn(*args)``; the future holds a :class:`Timed` result.

        The caller's context variables (structlog's job binding) are carried
        into the thread.
        """
        future: concurrent.futures.Future[Timed[T]] = concurrent.futures.Future()
        context = contextvars.copy_context()
        self._queue.put((future, context, lambda: fn(*args)))
        return future

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the thread and await its result."""
        timed = await asyncio.wrap_future(self.submit(fn, *args))
        return timed.value

    def close(self) -> None:
        """Let the thread end after the calls already queued."""
        self._queue.put(None)

    def _serve(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            self._run_one(item)
            # Not kept while waiting for the next call: a failed call's future
            # holds its exception and the frames it was raised through.
            del item

    def _run_one(self, item: _Item) -> None:
        future, context, call = item
        # False when the caller withdrew the call while it was queued.
        if not future.set_running_or_notify_cancel():
            return
        self._busy = True
        started = time.monotonic()
        try:
            value = context.run(call)
        except BaseException as error:  # handed to the awaiting coroutine
            future.set_exception(error)
        else:
            future.set_result(Timed(value, started, time.monotonic()))
        finally:
            self._busy = False
