"""One received request as a job: its timed stages, and what all jobs share.

A job's life, stage by stage, is run by :class:`consumer.delivery.runner.JobRunner`.
"""

from __future__ import annotations

import concurrent.futures
import enum
import io
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog
from PIL import Image

from consumer.aws.publisher import Publisher
from consumer.aws.request_queue import QueueInfo, ReceivedMessage, RequestQueue
from consumer.aws.storage import Storage
from consumer.clock import Clock
from consumer.contract.request import Request
from consumer.delivery.gpu_thread import GpuThread
from consumer.delivery.heartbeat import Heartbeat
from consumer.metrics import Metrics
from consumer.settings import Settings
from pipeline.interface import Generator
from pipeline.spec import GenerationSpec

log = structlog.get_logger(__name__)

DEFAULT_MAX_ATTEMPTS = 3

# Keys of the output object's user metadata.
META_JOB_ID, META_SEED, META_MODEL = "job-id", "seed", "model"
META_DIGEST = "request-digest"


class Outcome(enum.StrEnum):
    """How a job ended."""

    SUCCEEDED = "succeeded"
    REUSED = "reused"
    FAILED = "failed"
    RETRY = "retry"
    CANCELLED = "cancelled"
    FATAL = "fatal"


def _noop() -> None:
    return None


@dataclass
class Job:
    """One received request and what is known about it so far.

    Attributes:
        release_slot: called once the job no longer needs the GPU line, so
            the worker may prefetch the next request.
        committed: the job generates or reports its outcome; a drain waits
            for it instead of withdrawing it.
        reported: its completion event is published.
        stop: set to stop its generation at the next denoising step (the
            deadline, the end of a drain, a cancellation).
        timed_out: its generation ran past ``GENERATION_TIMEOUT_S``.
        cancelled: its cancellation marker was seen while it waited for or
            held the GPU.
    """

    message: ReceivedMessage
    clock: Clock
    heartbeat: Heartbeat
    release_slot: Callable[[], None] = _noop
    request: Request | None = None
    spec: GenerationSpec | None = None
    timings: dict[str, int] = field(default_factory=dict)
    gpu_future: concurrent.futures.Future[Any] | None = None
    committed: bool = False
    reported: bool = False
    outcome: Outcome | None = None
    fatal_reason: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    timed_out: bool = False
    cancelled: bool = False

    def withdraw(self) -> bool:
        """Stop the job if it has not begun generating; True when it never will."""
        if self.committed:
            return False
        return self.gpu_future is None or self.gpu_future.cancel()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the enclosed stage into :attr:`timings` (milliseconds)."""
        started = self.clock.monotonic()
        try:
            yield
        finally:
            self.timings[name] = whole_ms(self.clock.monotonic() - started)

    def final_timings(self) -> dict[str, int]:
        """The stage timings plus ``queue_wait`` and ``total``.

        ``total`` counts from the moment the receive call returned the
        request, not from the long poll that waited for it.
        """
        timings = dict(self.timings)
        wait = self.message.queue_wait_ms
        if wait is not None:
            timings["queue_wait"] = wait
        timings["total"] = whole_ms(self.clock.monotonic() - self.message.arrived_at)
        return timings


def whole_ms(seconds: float) -> int:
    """`seconds` as whole milliseconds, never negative."""
    return max(0, round(seconds * 1000))


@dataclass(frozen=True)
class JobEnvironment:
    """What every job of a worker shares."""

    settings: Settings
    generator: Generator
    gpu: GpuThread
    queue: RequestQueue
    storage: Storage
    publisher: Publisher
    heartbeat: Heartbeat
    metrics: Metrics
    clock: Clock
    max_attempts: int
    dlq_url: str | None
    stop_grace_s: float

    @classmethod
    def build(
        cls,
        *,
        settings: Settings,
        info: QueueInfo,
        generator: Generator,
        gpu: GpuThread,
        queue: RequestQueue,
        storage: Storage,
        publisher: Publisher,
        metrics: Metrics,
        clock: Clock,
        stop_grace_s: float,
    ) -> JobEnvironment:
        """The environment for the queue described by `info`: the settings
        win, else the queue's own visibility timeout, DLQ and receive count."""
        s = settings
        visibility = s.visibility_timeout_s or max(1, info.visibility_timeout_s)
        max_attempts = s.max_attempts or info.max_receive_count or DEFAULT_MAX_ATTEMPTS
        dlq_url = s.sqs_dlq_url or info.dlq_url
        if info.max_receive_count is not None and max_attempts > info.max_receive_count:
            log.warning(
                "max_attempts_above_redrive",
                max_attempts=max_attempts,
                max_receive_count=info.max_receive_count,
                note="SQS dead-letters such requests itself, without a failed event",
            )
        if not dlq_url:
            log.warning(
                "no_dead_letter_queue",
                note="set SQS_DLQ_URL or a RedrivePolicy on the request queue",
            )
        return cls(
            settings=s,
            generator=generator,
            gpu=gpu,
            queue=queue,
            storage=storage,
            publisher=publisher,
            heartbeat=Heartbeat(queue, visibility, clock),
            metrics=metrics,
            clock=clock,
            max_attempts=max_attempts,
            dlq_url=dlq_url,
            stop_grace_s=stop_grace_s,
        )


@dataclass(frozen=True, slots=True)
class Prepared:
    """A parsed job with its input fetched: ready for the GPU."""

    request: Request
    spec: GenerationSpec
    keys: list[str]
    digest: str
    image: Image.Image


def encode_png(picture: Image.Image) -> bytes:
    """The picture as PNG bytes (run off the event loop: it is CPU work)."""
    buffer = io.BytesIO()
    # Level 1 instead of Pillow's 6: several times faster on noisy pictures
    # for a file a little larger, and this CPU time competes with the I/O that
    # keeps the GPU fed.
    picture.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
