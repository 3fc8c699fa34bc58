"""The queues a worker takes requests from: the priority queue first, then the
request queue, with the priority queue's share of what is taken bounded."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

import structlog

from consumer.aws.request_queue import ReceivedMessage, RequestQueue
from consumer.delivery import attempts
from consumer.delivery.job import JobEnvironment
from consumer.delivery.options import WorkerOptions
from consumer.delivery.runner import JobRunner

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Source:
    """A queue the worker takes requests from, with its jobs' environment
    (its own heartbeat, dead-letter queue and attempt limit)."""

    queue: RequestQueue
    env: JobEnvironment
    runner: JobRunner


class PriorityShare:
    """Which queue to ask first, so that while both have work the priority
    queue gets at most `share` of the requests taken.

    It remembers where the last :data:`WINDOW` requests taken came from. The
    priority queue is asked first unless one more request from it would
    pass `share` of them; then the request queue is asked first, and the
    priority queue only when the request queue has nothing. So an empty
    request queue costs the priority queue nothing (one receive that does
    not wait), and a flood of priority requests leaves the request queue
    at least ``1 - share`` of the receives. ``share`` 1 always asks the
    priority queue first.
    """

    WINDOW = 20

    def __init__(self, share: float) -> None:
        self.share = share
        self._recent: deque[bool] = deque(maxlen=self.WINDOW)

    def priority_first(self) -> bool:
        """Whether one more request from the priority queue keeps it within its
        share of the last :data:`WINDOW` taken."""
        kept = list(self._recent)[1:] if len(self._recent) == self.WINDOW else self._recent
        return sum(kept) + 1 <= self.share * (len(kept) + 1) + 1e-9

    def took(self, priority: bool, count: int) -> None:
        """Note `count` requests taken, from the priority queue or not."""
        self._recent.extend([priority] * count)


async def receive_first(
    sources: list[Source],
    free: int,
    options: WorkerOptions,
    share: PriorityShare | None = None,
) -> list[tuple[Source, ReceivedMessage]]:
    """Up to `free` requests from the first of `sources` that has any.

    `sources` lists the priority queue first; with a `share`, the request
    queue is asked first instead whenever the priority queue has had its
    share. Every source but the last asked is checked without waiting, the
    last one long-polled for ``options.poll_wait_s``; with more than one
    source that is cut to ``options.priority_check_s``, so a priority request
    that arrives meanwhile waits at most that long (plus the requests the
    worker already holds).
    """
    ordered = list(sources)
    wait_s = options.poll_wait_s
    if len(sources) > 1:
        wait_s = min(wait_s, options.priority_check_s)
        if share is not None and not share.priority_first():
            ordered = [*sources[1:], sources[0]]
    for index, source in enumerate(ordered):
        last = index == len(ordered) - 1
        hold = source.env.heartbeat.receive_hold_s
        messages = await source.queue.receive(free, wait_s if last else 0, hold)
        if messages or last:
            if share is not None and messages:
                share.took(source is sources[0] and len(sources) > 1, len(messages))
            return [(source, message) for message in messages]
    return []


async def release_all(received: list[tuple[Source, ReceivedMessage]], out: list[str]) -> None:
    """Give back requests received while the services `out` are out, at no
    cost: taken now, they could be drawn but not delivered."""
    if not received:
        return
    log.info("released_while_paused", requests=len(received), services=out)
    await asyncio.gather(
        *(attempts.release(source.env.heartbeat, source.queue, m) for source, m in received)
    )
