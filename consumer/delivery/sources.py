"""The queues a worker takes requests from: the priority queue first, then the request queue."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog

from consumer.aws.request_queue import ReceivedMessage, RequestQueue
from consumer.delivery import attempts
from consumer.delivery.job import JobEnvironment
from consumer.delivery.runner import JobRunner

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Source:
    """A queue the worker takes requests from, with its jobs' environment
    (its own heartbeat, dead-letter queue and attempt limit)."""

    queue: RequestQueue
    env: JobEnvironment
    runner: JobRunner


async def receive_first(
    sources: list[Source], free: int, wait_s: int, priority_check_s: int
) -> list[tuple[Source, ReceivedMessage]]:
    """Up to `free` requests from the first of `sources` that has any.

    Every source but the last is checked without waiting; with more than one
    source the last one's long poll is cut to `priority_check_s`, so a
    priority request that arrives meanwhile waits at most that long (plus
    the requests the worker already holds).
    """
    if len(sources) > 1:
        wait_s = min(wait_s, priority_check_s)
    for index, source in enumerate(sources):
        last = index == len(sources) - 1
        hold = source.env.heartbeat.receive_hold_s
        messages = await source.queue.receive(free, wait_s if last else 0, hold)
        if messages or last:
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
