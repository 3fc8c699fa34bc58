"""The generate stage: a job's pictures drawn on the GPU thread, within its deadline.

Each call of the generator (the job's draw, and each safety redraw) has a
deadline of its own, grown from its cost (:mod:`consumer.delivery.deadline`),
counted from the moment the call begins on the GPU, never from the job's wait
behind another. At the deadline the job's stop event is set, so the
generation ends at its next denoising step. A request within the cost budget
does not take that long on a healthy GPU, so the worker is at fault: the job
fails with :class:`~consumer.errors.GenerationTimedOut` (fatal: the worker
stops, the request is charged one worker death); a GPU that does not come
back within the stop grace after that is wedged, fatal too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any

import structlog
from PIL import Image

from consumer.delivery.cancellation import JobCancelled
from consumer.delivery.deadline import deadline_s
from consumer.delivery.gpu_thread import Timed
from consumer.delivery.job import Job, JobEnvironment, Prepared, whole_ms
from consumer.delivery.job_state import JobState
from consumer.errors import GenerationFailed, GenerationTimedOut, IllustratorError
from pipeline.api.batch import batch_cost
from pipeline.api.errors import (
    ContentFilteredError,
    GenerationStopped,
    PipelineBrokenError,
    PipelineError,
)
from pipeline.api.interface import Generator
from pipeline.api.limits import REFERENCE_COST
from pipeline.api.safety import Drawn, draw
from pipeline.api.spec import GenerationSpec

log = structlog.get_logger(__name__)

# What a job's GPU future becomes once its outcome is in hand: done, holding
# nothing. A failed future would keep its exception, and with it the frames
# it was raised through, for as long as the job lives.
_SETTLED: concurrent.futures.Future[Any] = concurrent.futures.Future()
_SETTLED.set_result(None)


def _is_declared(error: Exception) -> bool:
    # Errors the generator does not declare (a torch RuntimeError, say) are
    # this job's generation failing, not a bug of the consumer.
    return isinstance(error, IllustratorError | PipelineError | MemoryError)


class Deadline:
    """When the generator's current call must end: set as each call begins
    (the job's draw, each redraw), from that call's cost."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.at: float | None = None
        self.seconds = 0.0
        self.cost = 0.0
        self.moved = asyncio.Event()

    def start(self, cost: float) -> None:
        """A call of `cost` begins now (on the event loop's thread)."""
        self.cost = cost
        self.seconds = deadline_s(cost, self.timeout_s)
        self.at = asyncio.get_running_loop().time() + self.seconds
        self.moved.set()


async def generate_on_gpu(
    env: JobEnvironment, job: Job, prepared: Prepared, announce: Callable[[], None] | None
) -> Drawn:
    """Draw the job's pictures on the GPU thread and check them.

    `announce`, when given, runs on the GPU thread as the generation begins.
    A generation stopped at its deadline is :class:`GenerationTimedOut` (the
    worker's fault), and any error the generator does not declare a
    transient ``generation_failed``. With a safety checker the pictures are
    checked there too, before anything is encoded: its time is
    ``timings_ms.safety`` (not part of ``generate``) and its counts go to the
    metrics, also when the job ends ``content_filtered``. One stopped by its
    cancellation raises :class:`JobCancelled`.
    """
    spec = prepared.spec
    deadline = Deadline(env.settings.generation_timeout_s)
    loop = asyncio.get_running_loop()
    first = True

    def on_call(call: GenerationSpec) -> None:
        # On the GPU thread, as each generator call begins.
        nonlocal first
        loop.call_soon_threadsafe(deadline.start, batch_cost(call))
        if first and announce is not None:
            announce()
        first = False

    job.advance(JobState.GENERATING)
    future = env.gpu.submit(_draw, env.generator, spec, prepared.image, job.stop, on_call)
    job.gpu_future = future
    try:
        timed = await _await_gpu(env, job, asyncio.wrap_future(future), deadline)
    except ContentFilteredError as error:
        _count_safety(env, job, error.checked, error.flagged, error.redraws, error.check_seconds)
        raise
    except GenerationStopped as error:
        reason = _why_stopped(job, error, deadline)
        if reason is error:
            raise
        raise reason from error
    except Exception as error:
        if _is_declared(error):
            raise
        raise GenerationFailed(f"{type(error).__name__}: {error}") from error
    finally:
        _settle(job, future)
    drawn = timed.value
    job.timings["generate"] = whole_ms(timed.seconds - drawn.check_seconds)
    env.metrics.graphs_built.inc(drawn.graphs)
    # A graph built in a job is a shape the warm-up did not foresee.
    (log.warning if drawn.graphs else log.info)("generation_finished", graphs=drawn.graphs)
    if drawn.checked:
        _count_safety(env, job, drawn.checked, drawn.flagged, drawn.redraws, drawn.check_seconds)
    _check_pictures(spec, drawn.pictures)
    return drawn


def _check_pictures(spec: GenerationSpec, pictures: list[Image.Image]) -> None:
    if len(pictures) != spec.num_images:
        raise GenerationFailed(
            f"the generator drew {len(pictures)} pictures, not {spec.num_images}"
        )
    for picture in pictures:
        if picture.size != (spec.width, spec.height):
            raise GenerationFailed(
                f"the generator drew {picture.size[0]}x{picture.size[1]}, "
                f"not {spec.width}x{spec.height}"
            )


def _count_safety(
    env: JobEnvironment, job: Job, checked: int, flagged: int, redraws: int, seconds: float
) -> None:
    job.timings["safety"] = whole_ms(seconds)
    job.safety = {"checked": checked, "flagged": flagged, "redraws": redraws}
    env.metrics.safety_checked(checked, flagged, redraws)
    if flagged:
        # Counts only: nothing of a flagged picture is ever logged.
        log.warning("pictures_flagged", checked=checked, flagged=flagged, redraws=redraws)


def _settle(job: Job, future: concurrent.futures.Future[Any]) -> None:
    """Let the job forget a finished GPU future; a running one is the drain's to await."""
    if future.done():
        job.gpu_future = _SETTLED


def _why_stopped(job: Job, error: GenerationStopped, deadline: Deadline) -> Exception:
    """What a stopped generation means for the job: cancelled, past its
    deadline (the worker's fault), or stopped by the drain (as it is)."""
    if job.cancelled:
        return JobCancelled(f"cancelled while it waited for or held the GPU: {error}")
    if job.state is JobState.TIMED_OUT:
        return GenerationTimedOut(
            f"the generation ran past its deadline of {deadline.seconds:g} s (cost "
            f"{deadline.cost:g}; GENERATION_TIMEOUT_S per cost {REFERENCE_COST:g}) and was "
            "stopped: a request within MAX_REQUEST_COST does not take that long on a healthy GPU"
        )
    return error


async def _await_gpu(
    env: JobEnvironment,
    job: Job,
    result: asyncio.Future[Timed[Drawn]],
    deadline: Deadline,
) -> Timed[Drawn]:
    loop = asyncio.get_running_loop()
    try:
        while not result.done():
            # No deadline while the job waits in line; each call's own once it runs.
            deadline.moved.clear()
            left = None if deadline.at is None else deadline.at - loop.time()
            if left is not None and left <= 0:
                break
            moved = asyncio.ensure_future(deadline.moved.wait())
            either: set[asyncio.Future[Any]] = {result, moved}
            try:
                await asyncio.wait(either, timeout=left, return_when="FIRST_COMPLETED")
            finally:
                moved.cancel()
        if not result.done():
            log.warning("generation_timeout", deadline_s=deadline.seconds, cost=deadline.cost)
            job.advance(JobState.TIMED_OUT)
            job.stop.set()
            await asyncio.wait({result}, timeout=env.stop_grace_s)
        if not result.done():
            raise PipelineBrokenError(
                f"the GPU did not come back within {env.stop_grace_s:g} s "
                "of stopping a generation past its deadline: it is wedged"
            )
    except asyncio.CancelledError:
        # A queued call is withdrawn; a running one is the drain's to stop.
        result.cancel()
        raise
    return result.result()


def _draw(
    generator: Generator,
    spec: GenerationSpec,
    image: Image.Image,
    stop: threading.Event,
    on_call: Callable[[GenerationSpec], object],
) -> Drawn:
    # On the GPU thread, with the job's log context. A job stopped while it
    # waited in line (cancelled, say) never begins: no step, no started event.
    if stop.is_set():
        raise GenerationStopped("generation stopped before it began")
    log.info(
        "generation_started",
        steps=spec.num_inference_steps,
        size=[spec.width, spec.height],
        num_images=spec.num_images,
    )
    return draw(generator, spec, image, stop, on_call)
