"""The events a job publishes: the started event and the completion event.

Who a completion event names follows contract 9.1: the parsed request's
ids, else (for a body that failed validation) what can be read of it, and
nobody at all for a body whose signature was not verified.
"""

from __future__ import annotations

from consumer.contract.event import (
    CompletionEvent,
    EventError,
    OutputRef,
    Parameters,
    StartedEvent,
    Status,
    utc_timestamp,
)
from consumer.contract.keys import s3_uri
from consumer.contract.request import Request, identifying_fields
from consumer.delivery import attempts
from consumer.delivery.job import Job, JobEnvironment


def output_refs(
    bucket: str, keys: list[str], seeds: list[int] | list[int | None]
) -> list[OutputRef]:
    """The event's ``data``: each output's URI with the seed it was drawn with."""
    return [
        OutputRef(s3_uri=s3_uri(bucket, key), seed=seed)
        for key, seed in zip(keys, seeds, strict=True)
    ]


def started_event(env: JobEnvironment, job: Job, request: Request) -> StartedEvent:
    """The event of a job that begins generating."""
    return StartedEvent(
        job_id=request.job_id,
        kind=request.kind.value,
        user_id=request.user_id,
        sqs_message_id=job.message.message_id,
        attempts=attempts.attempt(job.message),
        worker_id=env.settings.worker_id,
        started_at=utc_timestamp(env.clock.now()),
    )


def completion_event(
    env: JobEnvironment,
    job: Job,
    status: Status,
    *,
    data: list[OutputRef] | None = None,
    error: EventError | None = None,
    reused: bool = False,
    model: str | None = None,
) -> CompletionEvent:
    """The completion event of `job` ending with `status`."""
    job_id: str | None
    kind: str | None
    user_id: str | None
    if job.request is not None:
        job_id, kind, user_id = job.request.job_id, job.request.kind.value, job.request.user_id
    elif not job.authentic:
        # A sender without the key must not publish about anyone's job.
        job_id = kind = user_id = None
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
        model=model or env.generator.model_name,
        attempts=attempts.attempt(job.message),
        timings_ms=job.final_timings(),
        worker_id=env.settings.worker_id,
        finished_at=utc_timestamp(env.clock.now()),
        sqs_message_id=job.message.message_id,
    )
