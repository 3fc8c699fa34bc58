"""One job through its stages, each timed, with one outcome at the end.

Stages: check the signature and parse; look for an existing output
(idempotency); fetch and decode the input; generate on the GPU thread
(stopped at ``GENERATION_TIMEOUT_S`` from its start: a transient
``generation_failed``, or fatal when the GPU does not come back); encode and
upload the PNG; publish the event; delete the request. Any
failure goes to :func:`consumer.classify.classify` once, and the outcome
follows from its answer: retry later, dead-letter now, or stop the worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable
from typing import Any

import structlog
from PIL import Image

from consumer.classify import Classification, classify
from consumer.contract.event import (
    CompletionEvent,
    EventError,
    OutputRef,
    Parameters,
    Status,
    utc_timestamp,
)
from consumer.contract.keys import input_candidates, output_key, s3_uri
from consumer.contract.request import Request, effective_spec, identifying_fields, parse_request
from consumer.contract.signing import SIGNATURE_ATTRIBUTE, verify
from consumer.delivery.backoff import retry_delay
from consumer.delivery.gpu_thread import Timed
from consumer.delivery.job import (
    META_JOB_ID,
    META_MODEL,
    META_SEED,
    Job,
    JobEnvironment,
    Outcome,
    Prepared,
    encode_png,
    whole_ms,
)
from consumer.errors import GenerationFailed, IllustratorError, Severity
from pipeline.errors import GenerationStopped, PipelineBrokenError, PipelineError
from pipeline.images import decode_image
from pipeline.spec import GenerationSpec

log = structlog.get_logger(__name__)


def _is_declared(error: Exception) -> bool:
    # Errors the generator does not declare (a torch RuntimeError, say) are
    # this job's generation failing, not a bug of the consumer.
    return isinstance(error, IllustratorError | PipelineError | MemoryError)


class JobRunner:
    """Runs jobs to their outcome; never raises except on cancellation."""

    def __init__(self, env: JobEnvironment) -> None:
        self.env = env
        self.settings = env.settings

    async def run(self, job: Job) -> Outcome:
        """Take `job` through its stages and report its outcome."""
        fields = identifying_fields(job.message.body_bytes)
        structlog.contextvars.bind_contextvars(
            sqs_message_id=job.message.message_id, job_id=fields.job_id, user_id=fields.user_id
        )
        try:
            prepared = await self._prepare(job)
            if prepared is None:
                return Outcome.REUSED
            pictures = await self._generate(job, prepared)
            await self._deliver(job, prepared, pictures[0])
            return Outcome.SUCCEEDED
        except asyncio.CancelledError:
            raise
        except Exception as error:  # every failure ends in an outcome
            return await self._failed(job, error)

    # The stages.

    def _parse(self, job: Job) -> tuple[Request, GenerationSpec]:
        body = job.message.body_bytes
        if self.settings.auth_enabled:
            signature = job.message.string_attribute(SIGNATURE_ATTRIBUTE)
            verify(
                body,
                signature,
                self.settings.auth_token.get_secret_value(),
                self.settings.auth_token_previous.get_secret_value(),
            )
        request = parse_request(body, self.settings)
        spec = effective_spec(request, self.settings, self.env.generator.native_size)
        job.request, job.spec = request, spec
        return request, spec

    async def _prepare(self, job: Job) -> Prepared | None:
        request, spec = self._parse(job)
        key = output_key(self.settings, request.user_id, request.kind, request.job_id)
        existing = await self.env.storage.head(key)
        if existing is not None:
            await self._reuse(job, spec, key, existing)
            return None
        with job.stage("download"):
            candidates = input_candidates(request, self.settings)
            found, data = await self.env.storage.fetch_first(
                candidates, self.settings.max_input_bytes
            )
            image = await asyncio.to_thread(
                decode_image,
                data,
                max_bytes=self.settings.max_input_bytes,
                max_pixels=self.settings.max_input_pixels,
            )
        log.debug("input_fetched", key=found, size=image.size)
        return Prepared(request, spec, key, image)

    async def _generate(self, job: Job, prepared: Prepared) -> list[Image.Image]:
        spec = prepared.spec
        began = asyncio.Event()
        loop = asyncio.get_running_loop()
        future = self.env.gpu.submit(
            self._draw, spec, prepared.image, job.stop, lambda: loop.call_soon_threadsafe(began.set)
        )
        job.gpu_future = future
        try:
            timed = await self._await_gpu(job, asyncio.wrap_future(future), began)
        except GenerationStopped as error:
            if not job.timed_out:
                raise
            raise GenerationFailed(
                f"the generation ran past GENERATION_TIMEOUT_S "
                f"({self.settings.generation_timeout_s:g} s) and was stopped"
            ) from error
        except Exception as error:
            if _is_declared(error):
                raise
            raise GenerationFailed(f"{type(error).__name__}: {error}") from error
        finally:
            job.release_slot()
        job.timings["generate"] = whole_ms(timed.seconds)
        pictures = timed.value
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
        return pictures

    async def _await_gpu(
        self, job: Job, result: asyncio.Future[Timed[list[Image.Image]]], began: asyncio.Event
    ) -> Timed[list[Image.Image]]:
        """The generation's result, stopped at ``GENERATION_TIMEOUT_S`` from its start.

        A stopped generation that does not come back within the stop grace
        means the GPU is wedged: fatal.
        """
        try:
            starting = asyncio.ensure_future(began.wait())
            try:
                # The deadline counts from the start, not from the wait in line.
                either: set[asyncio.Future[Any]] = {result, starting}
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            finally:
                starting.cancel()
            if not result.done():
                await asyncio.wait({result}, timeout=self.settings.generation_timeout_s)
            if not result.done():
                log.warning(
                    "generation_timeout", generation_timeout_s=self.settings.generation_timeout_s
                )
                job.timed_out = True
                job.stop.set()
                await asyncio.wait({result}, timeout=self.env.stop_grace_s)
            if not result.done():
                raise PipelineBrokenError(
                    f"the GPU did not come back within {self.env.stop_grace_s:g} s "
                    "of stopping a generation past its deadline: it is wedged"
                )
        except asyncio.CancelledError:
            # A queued call is withdrawn; a running one is the drain's to stop.
            result.cancel()
            raise
        return result.result()

    def _draw(
        self,
        spec: GenerationSpec,
        image: Image.Image,
        stop: threading.Event,
        began: Callable[[], object],
    ) -> list[Image.Image]:
        # On the GPU thread, with the job's log context.
        began()
        log.info(
            "generation_started", steps=spec.num_inference_steps, size=[spec.width, spec.height]
        )
        return self.env.generator.generate(spec, image, stop)

    async def _deliver(self, job: Job, prepared: Prepared, picture: Image.Image) -> None:
        job.committed = True
        metadata = {
            META_JOB_ID: prepared.request.job_id,
            META_SEED: str(prepared.spec.seed),
            META_MODEL: self.env.generator.model_name,
        }
        with job.stage("upload"):
            png = await asyncio.to_thread(encode_png, picture)
            await self.env.storage.put_png(prepared.key, png, metadata)
        uri = s3_uri(self.env.storage.bucket, prepared.key)
        event = self._event(job, "succeeded", data=[OutputRef(s3_uri=uri)])
        await self._publish(job, event, Outcome.SUCCEEDED)
        await self._delete(job)
        log.info("job_succeeded", s3_uri=uri, seed=prepared.spec.seed, timings_ms=event.timings_ms)

    async def _reuse(
        self, job: Job, spec: GenerationSpec, key: str, metadata: dict[str, str]
    ) -> None:
        job.committed = True
        job.release_slot()
        # Report the seed and model the existing picture was made with.
        seed = metadata.get(META_SEED, "")
        if seed.isdigit():
            job.spec = dataclasses.replace(spec, seed=int(seed))
        uri = s3_uri(self.env.storage.bucket, key)
        event = self._event(
            job,
            "succeeded",
            data=[OutputRef(s3_uri=uri)],
            reused=True,
            model=metadata.get(META_MODEL),
        )
        await self._publish(job, event, Outcome.REUSED)
        await self._delete(job)
        log.info("job_reused", s3_uri=uri)

    async def _publish(
        self, job: Job, event: CompletionEvent, outcome: Outcome, error_code: str = ""
    ) -> None:
        await self.env.publisher.publish(event)
        job.reported = True
        job.outcome = outcome
        self.env.metrics.job_finished(event.kind, outcome.value, error_code)
        self.env.metrics.observe(event.timings_ms)

    async def _delete(self, job: Job) -> None:
        # Only once the event is out (contract section 4): a request deleted
        # before its event could be lost without a word to AutoBio.
        await self.env.heartbeat.release(job.message)
        await self.env.queue.delete(job.message)

    # Failures.

    async def _failed(self, job: Job, error: Exception) -> Outcome:
        job.committed = True
        job.release_slot()
        verdict = classify(error)
        if job.reported:
            # Only the delete failed: the request comes back after its
            # visibility timeout and is then reported as reused.
            log.warning("delete_failed", error=verdict.message)
            await self.env.heartbeat.release(job.message)
            return job.outcome or Outcome.SUCCEEDED
        self._log(job, verdict, error)
        try:
            return await self._settle(job, verdict)
        except asyncio.CancelledError:
            raise
        except Exception as second:  # e.g. SNS down while reporting a bad request
            problem = classify(second)
            log.warning("failure_not_recorded", error=problem.message)
            self.env.metrics.retries.labels(error_code=problem.code.value).inc()
            await self._back_off(job)
            return Outcome.RETRY

    def _log(self, job: Job, verdict: Classification, error: Exception) -> None:
        log.log(
            verdict.log_level,
            "job_failed",
            severity=verdict.severity.value,
            error_code=verdict.code.value,
            error=verdict.message,
            attempt=job.message.receive_count,
            exc_info=None if verdict.expected else error,
        )

    async def _settle(self, job: Job, verdict: Classification) -> Outcome:
        attempt = job.message.receive_count
        if verdict.severity is Severity.FATAL:
            job.fatal_reason = verdict.message
            await self.env.heartbeat.release(job.message)
            await self.env.queue.set_visibility(job.message, 0)
            return Outcome.FATAL
        if verdict.severity is Severity.TRANSIENT and attempt < self.env.max_attempts:
            delay = retry_delay(
                attempt, self.settings.retry_backoff_base_s, self.settings.retry_backoff_max_s
            )
            await self.env.heartbeat.release(job.message)
            await self.env.queue.set_visibility(job.message, delay)
            self.env.metrics.retries.labels(error_code=verdict.code.value).inc()
            log.info("job_retry_scheduled", attempt=attempt, delay_s=delay)
            return Outcome.RETRY
        await self._dead_letter(job, verdict)
        return Outcome.FAILED

    async def _dead_letter(self, job: Job, verdict: Classification) -> None:
        # Event first, then the dead-letter copy: if either fails the request
        # comes back and both are tried again, and only events may be
        # duplicated (subscribers deduplicate them by job_id).
        error = EventError(code=verdict.code, message=verdict.message, retryable=verdict.retryable)
        event = self._event(job, "failed", error=error)
        await self._publish(job, event, Outcome.FAILED, verdict.code.value)
        if self.env.dlq_url:
            await self.env.queue.dead_letter(
                job.message, self.env.dlq_url, verdict.code.value, verdict.message
            )
            self.env.metrics.dead_lettered.labels(error_code=verdict.code.value).inc()
        else:
            log.error("no_dead_letter_queue", note="the failed request is dropped after its event")
        await self._delete(job)

    async def _back_off(self, job: Job) -> None:
        # Best effort: if even this fails, the request comes back after its
        # visibility timeout.
        await self.env.heartbeat.release(job.message)
        delay = retry_delay(
            job.message.receive_count,
            self.settings.retry_backoff_base_s,
            self.settings.retry_backoff_max_s,
        )
        try:
            await self.env.queue.set_visibility(job.message, delay)
        except Exception as error:
            log.warning("backoff_not_set", error=classify(error).message)

    # The event.

    def _event(
        self,
        job: Job,
        status: Status,
        *,
        data: list[OutputRef] | None = None,
        error: EventError | None = None,
        reused: bool = False,
        model: str | None = None,
    ) -> CompletionEvent:
        job_id: str | None
        kind: str | None
        user_id: str | None
        if job.request is not None:
            job_id, kind, user_id = job.request.job_id, job.request.kind.value, job.request.user_id
        else:
            fields = identifying_fields(job.message.body_bytes)
            job_id, kind, user_id = fields.job_id, fields.kind, fields.user_id
        return CompletionEvent(
            job_id=job_id,
            kind=kind,
            user_id=user_id,
            status=status,
            data=data,
            error=error,
            reused=reused,
            parameters=Parameters.from_spec(job.spec) if job.spec is not None else None,
            model=model or self.env.generator.model_name,
            attempts=job.message.receive_count,
            timings_ms=job.final_timings(),
            worker_id=self.settings.worker_id,
            finished_at=utc_timestamp(self.env.clock.now()),
            sqs_message_id=job.message.message_id,
        )
