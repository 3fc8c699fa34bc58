"""The completion event (contract section 3), published to SNS once a job ends."""

from __future__ import annotations

import datetime as dt
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from consumer.errors import ErrorCode
from pipeline.spec import GenerationSpec

Status = Literal["succeeded", "failed"]
STARTED: Literal["started"] = "started"


class OutputRef(BaseModel):
    """Where a generated picture was written."""

    model_config = ConfigDict(extra="forbid")

    s3_uri: str
    seed: int | None = None


class EventError(BaseModel):
    """Why a job failed."""

    model_config = ConfigDict(extra="forbid")

    code: ErrorCode
    message: str
    retryable: bool


class Parameters(BaseModel):
    """The effective parameters a job ran with, the drawn seed included."""

    model_config = ConfigDict(extra="forbid")

    prompt: str
    style_prompt: str
    negative_prompt: str
    num_inference_steps: int
    ip_adapter_scale: float
    guidance_scale: float
    seed: int
    width: int
    height: int

    @classmethod
    def from_spec(cls, spec: GenerationSpec) -> Parameters:
        """The event's view of a generation spec."""
        # Every field of this model is a field of the spec of the same name.
        return cls(**{name: getattr(spec, name) for name in cls.model_fields})


class CompletionEvent(BaseModel):
    """One job's outcome. Subscribers deduplicate by ``job_id``.

    A succeeded event has ``data`` and no ``error``; a failed one the reverse.
    ``job_id``, ``kind`` and ``user_id`` are ``null`` when the body held no
    valid value for them.
    """

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    job_id: str | None
    kind: str | None
    user_id: str | None
    status: Status
    data: list[OutputRef] | None = None
    error: EventError | None = None
    reused: bool = False
    parameters: Parameters | None = None
    model: str
    attempts: int = Field(ge=1)
    timings_ms: dict[str, int] = Field(default_factory=dict)
    worker_id: str
    finished_at: str
    sqs_message_id: str

    def to_json(self) -> str:
        """Serialise for SNS: ``data`` only on success, ``error`` only on failure."""
        payload = self.model_dump(mode="json")
        payload.pop("error" if self.status == "succeeded" else "data", None)
        for ref in payload.get("data") or ():
            if ref.get("seed") is None:  # an output written without its seed recorded
                ref.pop("seed", None)
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))

    def attributes(self) -> dict[str, dict[str, str]]:
        """SNS message attributes, so subscribers can filter on them."""
        return {
            "status": {"DataType": "String", "StringValue": self.status},
            "kind": {"DataType": "String", "StringValue": self.kind or "unknown"},
        }


class StartedEvent(BaseModel):
    """A job began generating (published only with ``PUBLISH_STARTED_EVENTS=true``).

    Subscribers that filter on ``status`` = ``succeeded`` or ``failed`` never
    see it.
    """

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    status: Literal["started"] = STARTED
    job_id: str
    kind: str
    user_id: str
    sqs_message_id: str
    attempts: int = Field(ge=1)
    worker_id: str
    started_at: str

    def to_json(self) -> str:
        """Serialise for SNS."""
        return json.dumps(self.model_dump(mode="json"), ensure_ascii=False, separators=(",", ":"))

    def attributes(self) -> dict[str, dict[str, str]]:
        """SNS message attributes, as for completion events."""
        return {
            "status": {"DataType": "String", "StringValue": self.status},
            "kind": {"DataType": "String", "StringValue": self.kind},
        }


def utc_timestamp(now: dt.datetime) -> str:
    """``2026-11-24T10:00:00.123Z``: UTC, milliseconds, a ``Z`` suffix."""
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
