"""The steps of a drain that act on jobs rather than on the worker's loop.

A drain releases what it will not finish: the jobs' tasks are cancelled,
awaited, and their requests given back at no cost; then the GPU thread is
given its grace to come back from a stopped generation.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Sequence
from typing import Any

import structlog

from consumer.delivery import attempts
from consumer.delivery.job import Job

log = structlog.get_logger(__name__)


async def release_job(job: Job) -> None:
    """Give `job`'s request back; it costs the request nothing."""
    await attempts.release(job.heartbeat, job.heartbeat.queue, job.message)


async def cancel_and_release(jobs: Sequence[tuple[Job, asyncio.Task[None]]]) -> None:
    """Cancel the jobs' tasks, wait for them to end, then release each request.

    Whatever a job had done, its request comes back; a written output is then
    reused, not drawn again. A cancelled job writes nothing more.
    """
    for _, task in jobs:
        task.cancel()
    await asyncio.gather(*(task for _, task in jobs), return_exceptions=True)
    await asyncio.gather(*(release_job(job) for job, _ in jobs))


async def gpu_came_back(futures: list[concurrent.futures.Future[Any]], grace_s: float) -> bool:
    """Whether every stopped generation's future ended within `grace_s`."""
    if not futures:
        return True
    waiting = {asyncio.wrap_future(future) for future in futures}
    done, pending = await asyncio.wait(waiting, timeout=grace_s)
    for future in done:  # their GenerationStopped is expected: no one awaits it
        if not future.cancelled():
            future.exception()
    if not pending:
        log.info("generation_stopped")
    return not pending
