"""The events published to SNS: the completion event once a job ends, and
the optional started event when it begins generating (docs/contract.md)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from consumer.errors import ErrorCode
from pipeline.api.spec import GenerationSpec

Status = Literal["succeeded", "failed", "cancelled"]

# The generated documents' descriptions are plain text (no reST): JSON Schema
# and AsyncAPI readers show them as they are.
COMPLETION_DESCRIPTION = (
    "One job's outcome, published to SNS once the job ends. A succeeded event has data and "
    "no error; a failed one has error and no data; a cancelled one (the job was cancelled "
    "through its marker before its outputs were written) has neither. job_id, kind and "
    "user_id are null when the request body held no valid value for them, and always for "
    "an unauthorized request (its body is not trusted). Subscribers deduplicate by job_id."
)
STARTED_DESCRIPTION = (
    "Published when a job begins generating, only with PUBLISH_STARTED_EVENTS=true. "
    "A retried job can start more than once (see attempts)."
)


MESSAGE_ID_DESCRIPTION = (
    "The SQS MessageId of the message the worker received: the id SendMessage returned, "
    "unless the request is a retry copy, a dead-letter copy or a copy redriven from the "
    "DLQ, each a new message with a new id. job_id is the key that stays; this one "
    "matches events that have no job_id."
)


class OutputRef(BaseModel):
    """Where a generated picture was written, and the seed it was drawn with."""

    model_config = ConfigDict(extra="forbid")

    s3_uri: str = Field(description="s3://<bucket>/<S3_GENERATED_PREFIX><user_id>/<key>.png")
    seed: int | None = Field(
        None,
        description="The seed of the picture delivered: (seed + index) mod 2^32, or, for a "
        "picture redrawn after the safety check flagged it, (seed + index + k * num_images) "
        "mod 2^32 of its redraw k.",
    )


class EventError(BaseModel):
    """Why a job failed."""

    model_config = ConfigDict(extra="forbid")

    code: ErrorCode = Field(description="What went wrong, one of a fixed set of codes.")
    message: str = Field(description="A sentence for people; never the prompt texts.")
    retryable: bool = Field(
        description="true when the job failed for a transient reason on its last attempt: "
        "sending the same request again may succeed."
    )


class Parameters(BaseModel):
    """The effective parameters a job ran with, the drawn seed included."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="The prompt drawn; empty for a subject job without one.")
    style_prompt: str = Field(description="The style prompt used.")
    negative_prompt: str = Field(
        description="The negative prompt used; empty when guidance_scale is at most 1."
    )
    num_inference_steps: int = Field(description="Denoising steps.")
    ip_adapter_scale: float = Field(description="IP-Adapter conditioning strength.")
    guidance_scale: float = Field(description="Classifier-free guidance scale.")
    seed: int = Field(description="The seed of the first picture, drawn when not requested.")
    width: int = Field(description="Picture width in pixels.")
    height: int = Field(description="Picture height in pixels.")
    style: str | None = Field(
        None, description="The catalog style drawn in (named, or the default); null for none."
    )
    style_strength: float | None = Field(
        None, description="The style's strength (1 unless the request set it); null without one."
    )
    style_digest: str | None = Field(
        None,
        description="A short digest of the style's LoRA file (16 hex characters of its "
        "SHA-256), so a picture can be redrawn in exactly the same look; null without one.",
    )

    @classmethod
    def from_spec(cls, spec: GenerationSpec) -> Parameters:
        """The event's view of a generation spec."""
        # Every field of this model is a field of the spec of the same name.
        return cls(**{name: getattr(spec, name) for name in cls.model_fields})


class CompletionEvent(BaseModel):
    """One job's outcome. Subscribers deduplicate by job_id."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"description": COMPLETION_DESCRIPTION}
    )

    version: Literal[1] = Field(1, description="The contract version, 1.")
    job_id: str | None = Field(
        description="The request's job_id; null when unreadable or unauthorized."
    )
    kind: str | None = Field(
        description="The request's kind (memory or subject); null when unreadable or "
        "unauthorized (SNS attribute kind: unknown)."
    )
    user_id: str | None = Field(
        description="The request's user_id; null when unreadable or unauthorized."
    )
    status: Status = Field(
        description="succeeded, failed or cancelled; also an SNS message attribute."
    )
    data: list[OutputRef] | None = Field(
        None, description="Succeeded only: every picture, in order (num_images of them)."
    )
    error: EventError | None = Field(None, description="Failed only: why.")
    reused: bool = Field(
        False,
        description="true when the outputs already existed for this job_id and request "
        "and were not drawn again.",
    )
    parameters: Parameters | None = Field(
        None, description="The effective parameters; null when the request was invalid."
    )
    model: str = Field(
        description="The weights that drew (or would have drawn) the pictures: MODEL_S3_PATH "
        "when set, else MODEL_PATH, then ' + LoRA <LORA_PATH> (scale <LORA_SCALE>)' when a "
        "LoRA is fused in. A request's style is in parameters, not here."
    )
    attempts: int = Field(ge=1, description="The delivery attempt this event ends (1 first).")
    timings_ms: dict[str, int] = Field(
        default_factory=dict,
        description="Milliseconds by stage (queue_wait, download, generate, safety, upload, "
        "total); safety is the safety checker's time, redraws included, when one runs; "
        "total counts from the receive, not the idle poll before it.",
    )
    worker_id: str = Field(description="The worker that ran the job (WORKER_ID, else host).")
    finished_at: str = Field(description="UTC time the job ended, e.g. 2026-11-24T10:00:00.123Z.")
    sqs_message_id: str = Field(description=MESSAGE_ID_DESCRIPTION)

    def to_json(self) -> str:
        """Serialise for SNS: ``data`` only on success, ``error`` only on failure,
        neither when cancelled."""
        payload = self.model_dump(mode="json")
        if self.status != "succeeded":
            payload.pop("data", None)
        if self.status != "failed":
            payload.pop("error", None)
        for item in payload.get("data") or []:
            # An output without a known seed (an old reused object) says nothing of it.
            if item.get("seed") is None:
                item.pop("seed", None)
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))

    def attributes(self) -> dict[str, dict[str, str]]:
        """SNS message attributes, so subscribers can filter on them."""
        return _attributes(self.status, self.kind)


class StartedEvent(BaseModel):
    """A job began generating (published only with PUBLISH_STARTED_EVENTS=true)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"description": STARTED_DESCRIPTION}
    )

    version: Literal[1] = Field(1, description="The contract version, 1.")
    status: Literal["started"] = Field(
        "started", description="Always started; also an SNS message attribute."
    )
    job_id: str = Field(description="The request's job_id.")
    kind: str = Field(description="The request's kind, memory or subject.")
    user_id: str = Field(description="The request's user_id.")
    sqs_message_id: str = Field(description=MESSAGE_ID_DESCRIPTION)
    attempts: int = Field(ge=1, description="The delivery attempt that started (1 first).")
    worker_id: str = Field(description="The worker that runs the job (WORKER_ID, else host).")
    started_at: str = Field(description="UTC time generation began, e.g. 2026-11-24T10:00:00.123Z.")

    def to_json(self) -> str:
        """Serialise for SNS."""
        return json.dumps(self.model_dump(mode="json"), ensure_ascii=False, separators=(",", ":"))

    def attributes(self) -> dict[str, dict[str, str]]:
        """SNS message attributes: ``status`` = ``started`` and ``kind``."""
        return _attributes(self.status, self.kind)


def _attributes(status: str, kind: str | None) -> dict[str, dict[str, str]]:
    return {
        "status": {"DataType": "String", "StringValue": status},
        "kind": {"DataType": "String", "StringValue": kind or "unknown"},
    }


def utc_timestamp(now: dt.datetime) -> str:
    """``2026-11-24T10:00:00.123Z``: UTC, milliseconds, a ``Z`` suffix."""
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
