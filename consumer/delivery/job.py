"""One received request as a job: its timed stages, and what all jobs share.

A job's life, stage by stage, is run by :class:`consumer.delivery.runner.JobRunner`.
"""

from __future__ import annotations

import concurrent.futures
import io
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from PIL import Image

from consumer.aws.publisher import Publisher
from consumer.aws.request_queue import QueueInfo, ReceivedMessage, RequestQueue
from consumer.aws.storage import Storage
from consumer.aws.style_source import StyleShelf
from consumer.clock import Clock
from consumer.contract.request import Request
from consumer.delivery.gpu_thread import GpuThread
from consumer.delivery.heartbeat import Heartbeat
from consumer.delivery.job_state import (
    COMMITTED,
    HOLDS_SLOT,
    JobState,
    Outcome,
    check_transition,
    is_end,
)
from consumer.delivery.retry_policy import RetryLimits
from consumer.metrics import Metrics
from consumer.settings import Settings
from pipeline.api.interface import Generator
from pipeline.api.preparer import Preparer
from pipeline.api.reference import InputLimits
from pipeline.api.spec import GenerationSpec

if TYPE_CHECKING:
    from consumer.delivery.outputs import Batch, Outputs

log = structlog.get_logger(__name__)

DEFAULT_MAX_ATTEMPTS = 3

# Keys of the output object's user metadata.
META_JOB_ID, META_SEED, META_MODEL = "job-id", "seed", "model"
META_DIGEST = "request-digest"
# The request's seed; "seed" is the picture's own, a redraw's differing from it.
META_REQUEST_SEED = "request-seed"


def _noop() -> None:
    return None


@dataclass
class Job:
    """One received request and what is known about it so far.

    Its life is :attr:`state`, moved only by :meth:`advance` along the
    transitions of :mod:`consumer.delivery.job_state`.

    Attributes:
        release_slot: gives the job's slot back so the worker may prefetch
            the next request; called by :meth:`advance` alone, as the job
            leaves the states that hold a slot.
        outcome: the outcome reported in its event, then the one it ended with.
        fatal_reason: why it stops the worker: a fatal failure, whether the job
            ended :attr:`JobState.FATAL` (handed on) or failed (``crashed_worker``).
        stop: set to stop its generation at the next denoising step (the
            deadline, the end of a drain, a cancellation).
        safety: what the safety checker did (pictures ``checked``,
            ``flagged``, ``redraws``); ``None`` when no checker ran.
        authentic: its signature was verified (or signatures are off); until
            then nothing of its body names a job or a user, in events or logs.
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
    state: JobState = JobState.RECEIVED
    outcome: Outcome | None = None
    fatal_reason: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    safety: dict[str, int] | None = None
    authentic: bool = False
    cancelled: bool = False

    def advance(self, new: JobState, outcome: Outcome | None = None) -> None:
        """Move to `new` (with the `outcome` it reports), or raise
        :class:`~consumer.delivery.job_state.InvalidTransition`."""
        check_transition(self.state, new)
        held = self.state in HOLDS_SLOT
        self.state = new
        if outcome is not None:
            self.outcome = outcome
        if held and new not in HOLDS_SLOT:
            # The one place a slot is given back.
            self.release_slot()

    def end(self, outcome: Outcome, fatal_reason: str | None = None) -> Outcome:
        """End the job with `outcome`; returns it."""
        self.advance(outcome, outcome)
        self.fatal_reason = fatal_reason
        return outcome

    def abandon(self) -> None:
        """End a job cut short (cancelled by a shutdown); no-op once it has ended."""
        if not is_end(self.state):
            self.advance(JobState.RELEASED)

    @property
    def committed(self) -> bool:
        """Whether the job generates to its end or reports its outcome: a drain
        waits for it instead of withdrawing it."""
        return self.state in COMMITTED

    def withdraw(self) -> bool:
        """Stop the job if it has not begun generating; True when it never will."""
        if self.state not in (JobState.RECEIVED, JobState.GENERATING):
            return False
        if self.gpu_future is not None and not self.gpu_future.cancel():
            return False
        self.advance(JobState.WITHDRAWN)
        return True

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
    preparer: Preparer
    styles: StyleShelf | None = None

    @property
    def retry_limits(self) -> RetryLimits:
        """The numbers the retry decision is made with."""
        s = self.settings
        return RetryLimits(
            self.max_attempts, s.retry_backoff_base_s, s.retry_backoff_max_s, s.max_worker_deaths
        )

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
        preparer: Preparer,
        styles: StyleShelf | None = None,
    ) -> JobEnvironment:
        """The environment for the queue described by `info`: the settings
        win, else the queue's own visibility timeout and DLQ (``SQS_DLQ_URL``
        applies to the request queue only); MAX_ATTEMPTS is 3 by default."""
        s = settings
        visibility = s.visibility_timeout_s or max(1, info.visibility_timeout_s)
        max_attempts = s.max_attempts or DEFAULT_MAX_ATTEMPTS
        # SQS_DLQ_URL names the request queue's DLQ; any other queue (the
        # priority queue) dead-letters to its own RedrivePolicy's target, so
        # a redrive returns each request to the queue it came from.
        configured = s.sqs_dlq_url if queue.url == s.sqs_queue_url else ""
        dlq_url = configured or info.dlq_url
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
            preparer=preparer,
            styles=styles,
        )


def input_preparer(settings: Settings, generator: Generator) -> Preparer:
    """The preparer of a worker's input pictures, its server already starting
    (it is warm by the first picture); close it when the worker stops."""
    limits = InputLimits(
        settings.max_input_bytes, settings.max_input_pixels, settings.max_input_aspect
    )
    preparer = Preparer(limits, generator.reference_side, timeout_s=settings.input_prep_timeout_s)
    preparer.start()
    return preparer


@dataclass(frozen=True, slots=True)
class Prepared:
    """A parsed job with its input fetched: ready for the GPU.

    `outputs` are where its pictures go, `found` what of them was written
    before it was drawn.
    """

    request: Request
    spec: GenerationSpec
    outputs: Outputs
    found: Batch
    image: Image.Image


def encode_png(picture: Image.Image) -> bytes:
    """The picture as PNG bytes (run off the event loop: it is CPU work)."""
    buffer = io.BytesIO()
    # Level 1 instead of Pillow's 6: several times faster on noisy pictures
    # for a file a little larger, and this CPU time competes with the I/O that
    # keeps the GPU fed.
    picture.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
