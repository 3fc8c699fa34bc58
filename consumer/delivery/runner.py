"""One job through its stages, each timed, with one outcome at the end.

Stages: check the signature, parse and admit (cost, tokens, group); look for
existing outputs (idempotency); fetch the input and prepare it (in a process
of its own, bounded in time and memory: :mod:`pipeline.api.preparer`);
generate on the GPU thread within the deadline of its cost
(:mod:`consumer.delivery.generation`); encode the PNGs and write them where
absent (:mod:`consumer.delivery.outputs`); publish the event; delete the
request. Any failure goes to :func:`consumer.classify.classify` once, and
the outcome follows from :func:`consumer.delivery.retry_policy.decide`:
retry later, dead-letter now, or stop the worker, handing the request on
charged the death.
"""

from __future__ import annotations

import asyncio
import dataclasses

import structlog
from PIL import Image

from consumer.classify import Classification, classify
from consumer.clock import epoch_ms
from consumer.contract.budget import check_group, check_prompt_tokens
from consumer.contract.event import (
    CompletionEvent,
    EventError,
)
from consumer.contract.keys import input_candidates
from consumer.contract.request import (
    Request,
    effective_spec,
    identifying_fields,
    parse_request,
)
from consumer.contract.signing import SIGNATURE_ATTRIBUTE
from consumer.delivery import attempts
from consumer.delivery.backoff import retry_delay
from consumer.delivery.cancellation import CancelWatch, JobCancelled
from consumer.delivery.events import completion_event, output_refs, started_event
from consumer.delivery.generation import generate_on_gpu
from consumer.delivery.holding import Hold, HoldEnded, Holds
from consumer.delivery.job import (
    META_DIGEST,
    META_JOB_ID,
    META_MODEL,
    META_REQUEST_SEED,
    META_SEED,
    Job,
    JobEnvironment,
    Prepared,
)
from consumer.delivery.job_state import JobState, Outcome
from consumer.delivery.outage import Outages, Service, ServiceOut
from consumer.delivery.outputs import Batch, BatchUnfinished, Outputs, continue_batch
from consumer.delivery.retry_policy import Action, decide
from consumer.delivery.signing_keys import SigningKeys, settings_tokens
from consumer.metrics import emf_record
from pipeline.api.safety import Drawn
from pipeline.api.spec import GenerationSpec

log = structlog.get_logger(__name__)


class JobRunner:
    """Runs jobs to their outcome; never raises except on cancellation.

    Calls to a service that is out (`outages`) are waited out, not failed.
    """

    def __init__(
        self, env: JobEnvironment, outages: Outages | None = None, keys: SigningKeys | None = None
    ) -> None:
        self.env = env
        self.settings = env.settings
        self.outages = outages or Outages(env.clock, env.metrics)
        self.keys = keys or SigningKeys(settings_tokens(env.settings), None, env.clock)
        self.holds = Holds(self.outages, self.settings, env.clock)
        self.cancels = CancelWatch(env.storage, env.settings, env.clock)

    def _hold(self, job: Job) -> Hold:
        return self.holds.of(job.message.receipt_handle)

    async def run(self, job: Job) -> Outcome:
        """Take `job` through its stages and report its outcome."""
        # The ids from the body are bound once the body is known to be authentic.
        structlog.contextvars.bind_contextvars(
            sqs_message_id=job.message.message_id, job_id=None, user_id=None
        )
        try:
            prepared = await self._prepare(job)
            if prepared is None:
                return job.end(JobState.REUSED)
            drawn = await self._generate(job, prepared)
            self._hold(job).size = sum(
                p.width * p.height * len(p.getbands()) for p in drawn.pictures
            )
            await self._deliver(job, prepared, drawn.pictures, drawn.seeds)
            return job.end(JobState.SUCCEEDED)
        except asyncio.CancelledError:
            raise
        except JobCancelled as cancel:
            return await self._cancelled(job, cancel)
        except Exception as error:  # every failure ends in an outcome
            return await self._failed(job, error)
        finally:
            self.holds.end(job.message.receipt_handle)

    # The stages.

    def _parse(self, job: Job) -> tuple[Request, GenerationSpec]:
        body = job.message.body_bytes
        job.authentic = True
        fields = identifying_fields(body)
        structlog.contextvars.bind_contextvars(job_id=fields.job_id, user_id=fields.user_id)
        request = parse_request(body, self.settings)
        check_group(job.message.group, request.user_id)
        styles = self.env.styles.book if self.env.styles is not None else None
        spec = effective_spec(request, self.settings, self.env.generator.native_size, styles=styles)
        job.request, job.spec = request, spec
        check_prompt_tokens(self.env.generator.prompt_tokens(spec), self.settings.max_prompt_tokens)
        return request, spec

    async def _prepare(self, job: Job) -> Prepared | None:
        if self.settings.auth_enabled:
            signature = job.message.string_attribute(SIGNATURE_ATTRIBUTE)
            await self.keys.verify(job.message.body_bytes, signature)
        request, spec = self._parse(job)
        outputs = Outputs(self.env.storage, self.settings, request, spec.num_images)
        # The outputs and the cancellation marker are looked for together;
        # an outage of S3 releases the request.
        with self.outages.guard(Service.S3):
            found, cancelled = await asyncio.gather(
                outputs.find(), self.cancels.cancelled(request.user_id, request.job_id)
            )
        if found.whole:
            # Outputs all written: the success stands, whatever a marker says.
            job.advance(JobState.DELIVERING)
            await self._reuse(job, spec, found)
            return None
        # A batch begun by an earlier delivery is completed with its seed.
        job.spec = spec = continue_batch(spec, found)
        if cancelled:
            raise JobCancelled("cancelled before it was taken")
        attempts.check_deaths(job.message, self.settings.max_worker_deaths)
        with job.stage("download"):
            candidates = input_candidates(request, self.settings)
            with self.outages.guard(Service.S3):
                key, data = await self.env.storage.fetch_first(
                    candidates, self.settings.max_input_bytes
                )
            # In a process of its own, within INPUT_PREP_TIMEOUT_S and its
            # memory bound, off the event loop, before the GPU's turn.
            preparation = await asyncio.to_thread(self.env.preparer.prepare, data)
        image = preparation.image
        log.debug(
            "input_prepared",
            key=key,
            size=image.size,
            seconds=round(preparation.wall_s, 3),
            peak_mib=preparation.figures.peak_kib // 1024,
        )
        return Prepared(request, spec, outputs, found, image)

    async def _announce(self, job: Job, request: Request) -> None:
        """Publish the started event; best effort, since it only informs."""
        event = started_event(self.env, job, request)
        try:
            await self.env.publisher.publish(event)
        except Exception as error:
            log.warning("started_event_not_published", error=classify(error).message)
            return
        self.env.metrics.started_events.inc()

    async def _generate(self, job: Job, prepared: Prepared) -> Drawn:
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

    async def _deliver(
        self, job: Job, prepared: Prepared, pictures: list[Image.Image], seeds: list[int]
    ) -> None:
        # `seeds`: each picture's own, a redrawn one's redraw seed included.
        job.advance(JobState.DELIVERING)
        with job.stage("upload"):
            # Every picture is written before the event: a job succeeds with
            # all of its outputs or not at all; none is ever overwritten.
            metadata = [self._metadata(prepared, seed) for seed in seeds]
            batch, drawn_here = await prepared.outputs.write(
                self._hold(job), prepared.found, pictures, metadata
            )
        if not drawn_here:  # another delivery of the request wrote its own first
            await self._reuse(job, prepared.spec, batch)
            return
        data = output_refs(self.env.storage.bucket, batch.keys, batch.seeds())
        event = completion_event(self.env, job, "succeeded", data=data)
        await self._publish(job, event, JobState.SUCCEEDED)
        await self._delete(job)
        log.info(
            "job_succeeded",
            s3_uris=[ref.s3_uri for ref in data],
            seed=prepared.spec.seed,
            timings_ms=event.timings_ms,
        )

    def _metadata(self, prepared: Prepared, seed: int) -> dict[str, str]:
        return {
            META_JOB_ID: prepared.request.job_id,
            META_SEED: str(seed),
            META_REQUEST_SEED: str(prepared.spec.seed),
            META_MODEL: self.env.generator.model_name,
            META_DIGEST: prepared.outputs.digest,
        }

    async def _reuse(self, job: Job, spec: GenerationSpec, batch: Batch) -> None:
        # Report the seeds and model the existing pictures were made with.
        request_seed = batch.request_seed()
        if request_seed is not None:
            job.spec = dataclasses.replace(spec, seed=request_seed)
        data = output_refs(self.env.storage.bucket, batch.keys, batch.seeds())
        model = (batch.metadata[0] or {}).get(META_MODEL)
        event = completion_event(self.env, job, "succeeded", data=data, reused=True, model=model)
        await self._publish(job, event, JobState.REUSED)
        await self._delete(job)
        log.info("job_reused", s3_uris=[ref.s3_uri for ref in data])

    async def _publish(
        self, job: Job, event: CompletionEvent, outcome: Outcome, error_code: str = ""
    ) -> None:
        await self._hold(job).call(Service.SNS, lambda: self.env.publisher.publish(event))
        job.advance(JobState.REPORTED, outcome)
        self.env.metrics.job_finished(event.kind, outcome.value, error_code)
        self.env.metrics.observe(event.timings_ms)
        if self.settings.log_format == "json":
            record = emf_record(
                self.settings.metrics_namespace,
                event.kind,
                event.status,  # a reused job succeeded, as its event says
                event.timings_ms,
                epoch_ms(self.env.clock.now()),
                job.safety,
            )
            log.info("job_metrics", **record)

    async def _delete(self, job: Job) -> None:
        # Only once the event is out (contract section 4): a request deleted
        # before its event could be lost without a word to AutoBio.
        env = self.env
        await self._hold(job).call(
            Service.SQS, lambda: attempts.delete(env.heartbeat, env.queue, job.message)
        )

    async def _cancelled(self, job: Job, cancel: JobCancelled) -> Outcome:
        """Report a cancelled job and delete its request; nothing of it was written."""
        job.advance(JobState.SETTLING)
        try:
            await self._publish(
                job, completion_event(self.env, job, "cancelled"), JobState.CANCELLED
            )
            await self._delete(job)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # reported like any failure: retried later
            return await self._failed(job, error)
        log.info("job_cancelled", reason=str(cancel), timings_ms=job.final_timings())
        return job.end(JobState.CANCELLED)

    # Failures.

    async def _failed(self, job: Job, error: Exception) -> Outcome:
        verdict = classify(error)
        released = isinstance(error, ServiceOut | HoldEnded | BatchUnfinished)
        if (released or isinstance(error, attempts.DeathsToRecord)) and (
            job.state is not JobState.REPORTED
        ):
            # Not the request's failure (the service's, another delivery's, or
            # its workers' deaths): it costs no attempt.
            log.info("job_released", reason=verdict.message, attempt=attempts.attempt(job.message))
            await attempts.release(self.env.heartbeat, self.env.queue, job.message)
            job.advance(JobState.RELEASED)
            return JobState.RETRY
        if job.state is JobState.REPORTED:
            # Only the delete failed: the request comes back after its
            # visibility timeout and is then reported as reused.
            log.warning("delete_failed", error=verdict.message)
            await self.env.heartbeat.release(job.message)
            return job.end(job.outcome or JobState.SUCCEEDED)
        if job.state is not JobState.SETTLING:  # a cancellation is settling already
            job.advance(JobState.SETTLING)
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
            # A fatal failure still stops the worker (the receive count tells of it).
            return job.end(JobState.RETRY, verdict.message if verdict.fatal else None)

    def _log(self, job: Job, verdict: Classification, error: Exception) -> None:
        log.log(
            verdict.log_level,
            "job_failed",
            severity=verdict.severity.value,
            error_code=verdict.code.value,
            error=verdict.message,
            attempt=attempts.attempt(job.message),
            exc_info=None if verdict.expected else error,
        )

    async def _settle(self, job: Job, verdict: Classification) -> Outcome:
        attempt, limits = attempts.attempt(job.message), self.env.retry_limits
        decision = decide(verdict.severity, attempt, limits, attempts.deaths(job.message))
        if decision.crashed:
            verdict = attempts.crashed(decision.deaths, limits, verdict)
        if decision.action is Action.DEAD_LETTER:
            await self._dead_letter(job, verdict)
            return job.end(JobState.FAILED, verdict.message if decision.stop_worker else None)
        if decision.action is Action.HAND_ON:
            await attempts.hand_on(self.env.heartbeat, self.env.queue, job.message, decision.deaths)
            return job.end(JobState.FATAL, verdict.message)
        await self.env.heartbeat.release(job.message)
        # A fresh copy carrying the count: attempts survive the request
        # moving between workers, and releases never count (attempts.py).
        await self._hold(job).call(
            Service.SQS,
            lambda: attempts.resend(self.env.queue, job.message, attempt, decision.hide_s),
        )
        self.env.metrics.retries.labels(error_code=verdict.code.value).inc()
        log.info("job_retry_scheduled", attempt=attempt, delay_s=decision.hide_s)
        return job.end(JobState.RETRY)

    async def _dead_letter(self, job: Job, verdict: Classification) -> None:
        # Event first, then the dead-letter copy: if either fails the request
        # comes back and both are tried again, and only events may be
        # duplicated (subscribers deduplicate them by job_id).
        error = EventError(code=verdict.code, message=verdict.message, retryable=verdict.retryable)
        event = completion_event(self.env, job, "failed", error=error)
        await self._publish(job, event, JobState.FAILED, verdict.code.value)
        if self.env.dlq_url:
            dlq_url = self.env.dlq_url
            await self._hold(job).call(
                Service.SQS,
                lambda: self.env.queue.dead_letter(
                    job.message, dlq_url, verdict.code.value, verdict.message
                ),
            )
            self.env.metrics.dead_lettered.labels(error_code=verdict.code.value).inc()
        else:
            log.error("no_dead_letter_queue", note="the failed request is dropped after its event")
        await self._delete(job)

    async def _back_off(self, job: Job) -> None:
        # Best effort: if even this fails, the request comes back after its
        # visibility timeout.
        limits = self.env.retry_limits
        delay = retry_delay(
            attempts.attempt(job.message), limits.backoff_base_s, limits.backoff_max_s
        )
        try:
            await self.env.heartbeat.hand_back(job.message, delay)
        except Exception as error:
            log.warning("backoff_not_set", error=classify(error).message)
