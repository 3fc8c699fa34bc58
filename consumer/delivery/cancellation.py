"""Cancellation: AutoBio's marker at ``<S3_CANCEL_PREFIX><user_id>/<job_id>`` ends a job.

The marker is looked for once when the job is taken, then every
``CANCEL_POLL_S`` while the job waits for the GPU and while it generates. A
marker seen sets the job's stop event, the one drains and deadlines use, so
the generation ends at its next denoising step (or never begins). Every look
is a HEAD on the event loop, never on the GPU thread, so the GPU never waits
for S3; and a look that fails reads as "not cancelled": S3 trouble neither
cancels a job nor holds it up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog

from consumer.aws.storage import Storage
from consumer.classify import classify
from consumer.clock import Clock
from consumer.contract.keys import cancel_key
from consumer.delivery.job import Job
from consumer.settings import Settings

log = structlog.get_logger(__name__)

# A look that takes longer than this counts as "not cancelled" (and is
# logged): the job must not wait on a slow S3.
CHECK_TIMEOUT_S = 5.0


class JobCancelled(Exception):  # an outcome, not an error
    """The job's cancellation marker was seen before its outputs were written."""


class CancelWatch:
    """Looks for the cancellation markers of a worker's jobs."""

    def __init__(self, storage: Storage, settings: Settings, clock: Clock) -> None:
        self.storage = storage
        self.prefix = settings.s3_cancel_prefix
        self.poll_s = settings.cancel_poll_s
        self.clock = clock

    async def cancelled(self, user_id: str, job_id: str) -> bool:
        """Whether the job's marker exists; ``False`` when S3 cannot say in time."""
        key = cancel_key(self.prefix, user_id, job_id)
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a
            # cancellation that races the call's end, and the watch must end.
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                return await self.storage.exists(key)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # S3 trouble: the job goes on
            message = "timed out" if isinstance(error, TimeoutError) else classify(error).message
            log.warning("cancel_check_failed", error=message)
            return False

    async def _poll(self, job: Job, user_id: str, job_id: str, ended: asyncio.Event) -> None:
        while not job.stop.is_set() and not ended.is_set():
            await self.clock.sleep(self.poll_s)
            if ended.is_set():
                return
            if await self.cancelled(user_id, job_id):
                log.info("cancel_seen")
                job.cancelled = True
                job.stop.set()
                return

    @contextlib.asynccontextmanager
    async def watching(self, job: Job, user_id: str, job_id: str) -> AsyncIterator[None]:
        """Poll the job's marker while the enclosed block runs; a marker seen
        marks the job cancelled and sets its stop event."""
        ended = asyncio.Event()
        task = asyncio.create_task(self._poll(job, user_id, job_id, ended), name=f"cancel-{job_id}")
        try:
            yield
        finally:
            ended.set()  # ends the loop even if a cancellation were lost
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
