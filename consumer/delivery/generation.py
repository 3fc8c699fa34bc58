"""The generate stage: a job's pictures drawn on the GPU thread, within its deadline.

The deadline (``GENERATION_TIMEOUT_S``) counts from the moment the GPU begins
the job, not from its wait behind another. At the deadline the job's stop
event is set, so the generation ends at its next denoising step; a GPU that
does not come back within the stop grace after that is wedged, which is fatal
for the worker.
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
from consumer.delivery.gpu_thread import Timed
from consumer.delivery.job import Job, JobEnvironment, Prepared, whole_ms
from consumer.delivery.job_state import JobState
from consumer.errors import GenerationFailed, IllustratorError
from pipeline.api.errors import (
    ContentFilteredError,
    GenerationStopped,
    PipelineBrokenError,
    PipelineError,
)
from pipeline.api.interface import Generator
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


async def generate_on_gpu(
    env: JobEnvironment, job: Job, prepared: Prepared, announce: Callable[[], None] | None
) -> Drawn:
    """Draw the job's pictures on the GPU thread and check them.

    `announce`, when given, runs on the GPU thread as the generation begins.
    A generation stopped at its deadline is a transient ``generation_failed``,
    and so is any error the generator does not declare. With a safety
    checker the pictures are checked there too, before anything is encoded:
    its time is ``timings_ms.safety`` (not part of ``generate``) and its
    counts go to the metrics, also when the job ends ``content_filtered``.
    One stopped by its cancellation raises :class:`JobCancelled`.
    """
    spec = prepared.spec
    began = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_begin() -> None:
        loop.call_soon_threadsafe(began.set)
        if announce is not None:
            announce()

    job.advance(JobState.GENERATING)
    future = env.gpu.submit(_draw, env.generator, spec, prepared.image, job.stop, on_begin)
    job.gpu_future = future
    try:
        timed = await _await_gpu(env, job, asyncio.wrap_future(future), began)
    except ContentFilteredError as error:
        _count_safety(env, job, error.checked, error.flagged, error.redraws, error.check_seconds)
        raise
    except GenerationStopped as error:
        reason = _why_stopped(env, job, error)
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


def _why_stopped(env: JobEnvironment, job: Job, error: GenerationStopped) -> Exception:
    """What a stopped generation means for the job: cancelled, past its
    deadline (transient), or stopped by the drain (as it is)."""
    if job.cancelled:
        return JobCancelled(f"cancelled while it waited for or held the GPU: {error}")
    if job.state is JobState.TIMED_OUT:
        return GenerationFailed(
            f"the generation ran past GENERATION_TIMEOUT_S "
            f"({env.settings.generation_timeout_s:g} s) and was stopped"
        )
    return error


async def _await_gpu(
    env: JobEnvironment,
    job: Job,
    result: asyncio.Future[Timed[Drawn]],
    began: asyncio.Event,
) -> Timed[Drawn]:
    timeout_s = env.settings.generation_timeout_s
    try:
        starting = asyncio.ensure_future(began.wait())
        try:
            # The deadline counts from the start, not from the wait in line.
            either: set[asyncio.Future[Any]] = {result, starting}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            starting.cancel()
        if not result.done():
            await asyncio.wait({result}, timeout=timeout_s)
        if not result.done():
            log.warning("generation_timeout", generation_timeout_s=timeout_s)
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
    began: Callable[[], object],
) -> Drawn:
    # On the GPU thread, with the job's log context. A job stopped while it
    # waited in line (cancelled, say) never begins: no step, no started event.
    if stop.is_set():
        raise GenerationStopped("generation stopped before it began")
    began()
    log.info(
        "generation_started",
        steps=spec.num_inference_steps,
        size=[spec.width, spec.height],
        num_images=spec.num_images,
    )
    return draw(generator, spec, image, stop)
