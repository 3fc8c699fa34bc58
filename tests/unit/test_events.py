"""Contract section 3: the completion event's shape."""

from __future__ import annotations

import datetime as dt
import json

from consumer.contract.event import (
    CompletionEvent,
    EventError,
    OutputRef,
    Parameters,
    utc_timestamp,
)
from consumer.errors import ErrorCode
from pipeline.api.spec import GenerationSpec, JobKind

SPEC = GenerationSpec(JobKind.MEMORY, "p", "s", "n", 30, 0.33, 5.0, 1234, 1024, 1024)


def event(**fields: object) -> CompletionEvent:
    base: dict[str, object] = {
        "job_id": "m-001",
        "kind": "memory",
        "user_id": "user123",
        "status": "succeeded",
        "model": "stabilityai/stable-diffusion-xl-base-1.0",
        "attempts": 1,
        "worker_id": "i-0abc",
        "finished_at": "2026-11-24T10:00:00.123Z",
        "sqs_message_id": "msg-1",
    }
    return CompletionEvent.model_validate({**base, **fields})


def test_succeeded_event_has_data_and_no_error() -> None:
    ok = event(
        data=[OutputRef(s3_uri="s3://b/generated/user123/memory_m-001.png")],
        parameters=Parameters.from_spec(SPEC),
        timings_ms={"queue_wait": 1, "download": 2, "generate": 3, "upload": 4, "total": 10},
    )
    payload = json.loads(ok.to_json())
    assert "error" not in payload
    assert payload["data"] == [{"s3_uri": "s3://b/generated/user123/memory_m-001.png"}]
    assert payload["parameters"]["seed"] == 1234
    assert payload["reused"] is False
    assert payload["version"] == 1
    assert payload["sqs_message_id"] == "msg-1"
    assert ok.attributes() == {
        "status": {"DataType": "String", "StringValue": "succeeded"},
        "kind": {"DataType": "String", "StringValue": "memory"},
    }


def test_failed_event_has_error_and_no_data_and_nulls_for_unknown_fields() -> None:
    failed = event(
        job_id=None,
        kind=None,
        user_id=None,
        status="failed",
        error=EventError(code=ErrorCode.INVALID_REQUEST, message="not JSON", retryable=False),
    )
    payload = json.loads(failed.to_json())
    assert "data" not in payload
    assert payload["error"] == {
        "code": "invalid_request",
        "message": "not JSON",
        "retryable": False,
    }
    assert payload["job_id"] is None
    assert payload["kind"] is None
    assert payload["user_id"] is None
    assert payload["parameters"] is None
    assert failed.attributes()["kind"]["StringValue"] == "unknown"
    assert failed.attributes()["status"]["StringValue"] == "failed"


def test_timestamp_format_is_utc_with_milliseconds() -> None:
    moment = dt.datetime(2026, 11, 24, 11, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert utc_timestamp(moment) == "2026-11-24T10:00:00.123Z"


def test_the_event_parameters_are_the_spec_fields_of_the_same_names() -> None:
    import dataclasses

    from consumer.contract.event import Parameters
    from pipeline.api.spec import GenerationSpec

    spec_fields = {field.name for field in dataclasses.fields(GenerationSpec)}
    # The spec's kind is the event's own field; num_images is the length of data;
    # the style's local LoRA file and the scale its slot runs at are the engine's
    # (the event names the style, its strength and the file's digest).
    engine_only = {"style_lora", "style_lora_scale"}
    assert set(Parameters.model_fields) == spec_fields - {"kind", "num_images"} - engine_only
