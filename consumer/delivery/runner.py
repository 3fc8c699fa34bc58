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

import structlog
from PIL import Image

from consumer.classify import Classification, classify
from consumer.clock import epoch_ms
from consumer.contract.event import (
    CompletionEvent,
    EventError,
    OutputRef,
    Parameters,
    StartedEvent,
    Status,
    utc_timestamp,
)
from consumer.contract.keys import input_candidates, output_keys, s3_uri
from consumer.contract.request import (
    Request,
    effective_spec,
    identifying_fields,
    parse_request,
    request_digest,
)
from consumer.contract.signing import SIGNATURE_ATTRIBUTE, verify
from consumer.delivery.backoff import retry_delay
from consumer.delivery.cancellation import CancelWatch, JobCancelled
from consumer.delivery.generation import generate_on_gpu
from consumer.delivery.job import (
    META_DIGEST,
    META_JOB_ID,
    META_MODEL,
    META_SEED,
    Job,
    JobEnvironment,
    Outcome,
    Prepared,
    encode_png,
)
from consumer.errors import InvalidRequest, Severity
from consumer.metrics import emf_record
from pipeline.batch import image_seeds
from pipeline.images import decode_image
from pipeline.spec import GenerationSpec

log = structlog.get_logger(__name__)


class JobRunner:
    """Runs jobs to their outcome; never raises except on cancellation."""

    def __init__(self, env: JobEnvironment) -> None:
        self.env = env
        self.settings = env.settings
        self.cancels = CancelWatch(env.storage, env.settings, env.clock)

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
            await self._deliver(job, prepared, pictures)
            return Outcome.SUCCEEDED
        except asyncio.CancelledError:
            raise
        except JobCancelled as cancel:
            return await self._cancelled(job, cancel)
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
        keys = output_keys(
            self.settings, request.user_id, request.kind, request.job_id, spec.num_images
        )
        digest = request_digest(request)
        # The outputs and the cancellation marker are looked for together.
        existing, cancelled = await asyncio.gather(
            asyncio.gather(*(self.env.storage.head(key) for key in keys)),
            self.cancels.cancelled(request.user_id, request.job_id),
        )
        for metadata in existing:
            # Outputs written before digests were recorded count as matching.
            if metadata is not None and metadata.get(META_DIGEST, digest) != digest:
                raise InvalidRequest(
                    f"job id {request.job_id} was already used for a different request"
                )
        if all(metadata is not None for metadata in existing):
            # Outputs all written: the success stands, whatever a marker says.
            await self._reuse(job, spec, keys, [m or {} for m in existing])
            return None
        if cancelled:
            raise JobCancelled("cancelled before it was taken")
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
        return Prepared(request, spec, keys, digest, image)

    async def _announce(self, job: Job, request: Request) -> None:
        """Publish the started event; best effort, since it only informs."""
        event = StartedEvent(
            job_id=request.job_id,
            kind=request.kind.value,
            user_id=request.user_id,
            sqs_message_id=job.message.message_id,
            attempts=job.message.receive_count,
            worker_id=self.settings.worker_id,
            started_at=utc_timestamp(self.env.clock.now()),
        )
        try:
            await self.env.publisher.publish(event)
        except Exception as error:
            log.warning("started_event_not_published", error=classify(error).message)
            return
        self.env.metrics.started_events.inc()

    async def _generate(self, job: Job, prepared: Prepared) -> list[Image.Image]:
        announce = None
        if self.settings.publish_started_events:
            loop = asyncio.get_running_loop()

            def announce() -> None:
                # From the GPU thread as the generation begins (not while the
                # job waits behind another); published from the event loop.
                asyncio.run_coroutine_threadsafe(self._announce(job, prepared.request), loop)

        request = prepared.request
        async with self.cancels.watching(job, request.user_id, request.job_id):
            pictures = await generate_on_gpu(self.env, job, prepared, announce)
        if job.cancelled:  # seen as the last step ended: still nothing is written
            raise JobCancelled("cancelled as its generation ended")
        return pictures

    async def _deliver(self, job: Job, prepared: Prepared, pictures: list[Image.Image]) -> None:
        job.committed = True
        seeds = image_seeds(prepared.spec)
        with job.stage("upload"):
            # Every picture is written before the event: a job succeeds with
            # all of its outputs or not at all.
            await asyncio.gather(
                *(
                    self._upload(prepared, key, picture, seed)
                    for key, picture, seed in zip(prepared.keys, pictures, seeds, strict=True)
                )
            )
        data = self._refs(prepared.keys, seeds)
        event = self._event(job, "succeeded", data=data)
        await self._publish(job, event, Outcome.SUCCEEDED)
        await self._delete(job)
        log.info(
            "job_succeeded",
            s3_uris=[ref.s3_uri for ref in data],
            seed=prepared.spec.seed,
            timings_ms=event.timings_ms,
        )

    async def _upload(self, prepared: Prepared, key: str, picture: Image.Image, seed: int) -> None:
        metadata = {
            META_JOB_ID: prepared.request.job_id,
            META_SEED: str(seed),
            META_MODEL: self.env.generator.model_name,
            META_DIGEST: prepared.digest,
        }
        png = await asyncio.to_thread(encode_png, picture)
        await self.env.storage.put_png(key, png, metadata)

    def _refs(self, keys: list[str], seeds: list[int] | list[int | None]) -> list[OutputRef]:
        """The event's ``data``: each output's URI with the seed it was drawn with."""
        bucket = self.env.storage.bucket
        return [
            OutputRef(s3_uri=s3_uri(bucket, key), seed=seed)
            for key, seed in zip(keys, seeds, strict=True)
        ]

    async def _reuse(
        self, job: Job, spec: GenerationSpec, keys: list[str], metadata: list[dict[str, str]]
    ) -> None:
        job.committed = True
        job.release_slot()
        # Report the seeds and model the existing pictures were made with.
        seeds = [int(m[META_SEED]) if m.get(META_SEED, "").isdigit() else None for m in metadata]
        if seeds[0] is not None:
            job.spec = dataclasses.replace(spec, seed=seeds[0])
        data = self._refs(keys, seeds)
        event = self._event(
            job, "succeeded", data=data, reused=True, model=metadata[0].get(META_MODEL)
        )
        await self._publish(job, event, Outcome.REUSED)
        await self._delete(job)
        log.info("job_reused", s3_uris=[ref.s3_uri for ref in data])

    async def _publish(
        self, job: Job, event: CompletionEvent, outcome: Outcome, error_code: str = ""
    ) -> None:
        await self.env.publisher.publish(event)
        job.reported = True
        job.outcome = outcome
        self.env.metrics.job_finished(event.kind, outcome.value, error_code)
        self.env.metrics.observe(event.timings_ms)
        if self.settings.log_format == "json":
            record = emf_record(
                self.settings.metrics_namespace,
                event.kind,
                event.status,  # a reused job succeeded, as its event says
                event.timings_ms,
                epoch_ms(self.env.clock.now()),
            )
            log.info("job_metrics", **record)

    async def _delete(self, job: Job) -> None:
        # Only once the event is out (contract section 4): a request deleted
        # before its event could be lost without a word to AutoBio.
        await self.env.heartbeat.release(job.message)
        await self.env.queue.delete(job.message)

    async def _cancelled(self, job: Job, cancel: JobCancelled) -> Outcome:
        """Report a cancelled job and delete its request; nothing of it was written."""
        job.committed = True
        job.release_slot()
        try:
            await self._publish(job, self._event(job, "cancelled"), Outcome.CANCELLED)
            await self._delete(job)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # reported like any failure: retried later
            return await self._failed(job, error)
        log.info("job_cancelled", reason=str(cancel), timings_ms=job.final_timings())
        return Outcome.CANCELLED

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
