"""Permanent, transient, final and fatal failures (contract sections 3 and 4)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from consumer.delivery.worker import EXIT_FATAL
from consumer.logs import configure_logging
from pipeline.api.errors import GenerationOOMError, PipelineBrokenError
from tests.support.aws import REGION, Stack
from tests.support.helpers import Observer, eventually, memory, png, running, settings
from tests.support.recording import blank

TOKEN = "s3cr3t-signing-token"


def _dead_letters(stack: Stack) -> list[dict[str, Any]]:
    return stack.receive_all(stack.dlq_url)


async def _one_failure(stack: Stack, body: dict[str, Any] | str, **kwargs: Any) -> dict[str, Any]:
    observer = Observer(stack)
    generator = blank()
    async with running(generator, kwargs.pop("config", None) or settings()):
        stack.send(body, attributes={"trace": "abc"}, **kwargs)
        (event,) = await observer.wait(1)
        await eventually(lambda: stack.queue_counts() == (0, 0), what="the request deleted")
    assert generator.calls == []
    assert event["status"] == "failed"
    assert "data" not in event
    assert event["error"]["retryable"] is False
    assert event["attempts"] == 1
    assert observer.attributes[0]["status"] == "failed"
    return event


async def test_body_that_is_not_json_is_dead_lettered_at_once(stack: Stack) -> None:
    event = await _one_failure(stack, "this is {not json")
    assert event["error"]["code"] == "invalid_request"
    assert event["job_id"] is None
    assert event["kind"] is None
    assert event["user_id"] is None
    assert event["sqs_message_id"]
    (dead,) = _dead_letters(stack)
    assert dead["Body"] == "this is {not json"
    attributes = dead["MessageAttributes"]
    assert attributes["trace"]["StringValue"] == "abc"
    assert attributes["error_code"]["StringValue"] == "invalid_request"
    assert "not JSON" in attributes["error_message"]["StringValue"]
    # Dead-lettered by the worker on the first attempt, not by SQS's redrive.
    assert dead["Attributes"]["ApproximateReceiveCount"] == "1"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (memory("bad-1", colour="red"), "colour"),
        (memory("bad-2", version=2), "version"),
        (memory("bad-3", prompt=None), "prompt"),
        (memory("bad-4", width=100), "width"),
        (memory("bad-5", image_key="subjects/x.png"), "image_key"),
        (memory("bad-6", image_key="avatars/../x.png"), "image_key"),
        ("[1, 2]", "JSON object"),
    ],
)
async def test_invalid_requests(stack: Stack, body: dict[str, Any] | str, fragment: str) -> None:
    event = await _one_failure(stack, body)
    assert event["error"]["code"] == "invalid_request"
    assert fragment in event["error"]["message"]
    if isinstance(body, dict):
        assert event["job_id"] == body["job_id"]
        assert event["kind"] == "memory"
    (dead,) = _dead_letters(stack)
    assert dead["MessageAttributes"]["error_code"]["StringValue"] == "invalid_request"


async def test_invalid_kind_reports_unknown_kind_attribute(stack: Stack) -> None:
    observer = Observer(stack)
    async with running(blank()):
        stack.send({"job_id": "k-1", "kind": "poem", "user_id": "u"})
        (event,) = await observer.wait(1)
    assert event["kind"] is None
    assert event["job_id"] == "k-1"
    assert observer.attributes[0] == {"status": "failed", "kind": "unknown"}


async def test_missing_input_is_input_not_found(stack: Stack) -> None:
    event = await _one_failure(stack, memory("nf-1", user_id="nobody"))
    assert event["error"]["code"] == "input_not_found"
    assert "avatars/nobody.png" in event["error"]["message"]
    (dead,) = _dead_letters(stack)
    assert dead["MessageAttributes"]["error_code"]["StringValue"] == "input_not_found"


@pytest.mark.parametrize(
    ("data", "limits"),
    [
        (b"GIF89a not really", {}),
        (png()[:40], {}),
        (png(64, 64), {"max_input_pixels": 1000}),
        (png(64, 64), {"max_input_bytes": 50}),
    ],
    ids=["not-an-image", "truncated", "too-many-pixels", "too-many-bytes"],
)
async def test_bad_input_is_invalid_input(
    stack: Stack, data: bytes, limits: dict[str, int]
) -> None:
    stack.put_input("avatars/user1.png", data)
    event = await _one_failure(stack, memory("ii-1"), config=settings(**limits))
    assert event["error"]["code"] == "invalid_input"
    assert event["parameters"]["seed"] == 7


async def test_signing_on_accepts_signed_and_refuses_the_rest(stack: Stack) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    generator = blank()
    config = settings(auth_enabled=True, auth_token=TOKEN)
    async with running(generator, config):
        stack.send(memory("sig-ok"), token=TOKEN)
        stack.send(memory("sig-none"))
        stack.send(memory("sig-bad"), token="another-token")
        stack.send(memory("sig-bad"), attributes={"signature": "0" * 64})
        await observer.wait(4)
        await eventually(lambda: stack.queue_counts() == (0, 0), what="all deleted")
    by_job: dict[str | None, list[str]] = {}
    for event in observer.events:
        by_job.setdefault(event["job_id"], []).append(
            event["status"] if event["status"] == "succeeded" else event["error"]["code"]
        )
    # The refused ones name no job: their bodies are not trusted.
    assert by_job == {"sig-ok": ["succeeded"], None: ["unauthorized"] * 3}
    assert len(generator.calls) == 1
    dead = _dead_letters(stack)
    assert {d["MessageAttributes"]["error_code"]["StringValue"] for d in dead} == {"unauthorized"}
    assert len(dead) == 3
    assert all(TOKEN not in json.dumps(event) for event in observer.events)


async def test_an_unverified_body_names_nobody_in_its_event_or_logs(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("debug", "json")
    victim = memory("victim-job", "victim-user")
    event = await _one_failure(
        stack, victim, token="not-the-token", config=settings(auth_enabled=True, auth_token=TOKEN)
    )
    assert event["error"]["code"] == "unauthorized"
    assert (event["job_id"], event["kind"], event["user_id"]) == (None, None, None)
    assert event["parameters"] is None
    (dead,) = _dead_letters(stack)
    assert json.loads(dead["Body"]) == victim  # kept whole for operators
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    failed = [line for line in lines if line["event"] == "job_failed"]
    assert len(failed) == 1
    assert failed[0]["error_code"] == "unauthorized"
    assert failed[0]["sqs_message_id"] == event["sqs_message_id"]
    for line in lines:
        text = json.dumps(line)
        assert "victim-job" not in text
        assert "victim-user" not in text


async def test_unauthorized_event_is_filtered_as_kind_unknown(stack: Stack) -> None:
    observer = Observer(stack)
    async with running(blank(), settings(auth_enabled=True, auth_token=TOKEN)):
        stack.send(memory("victim-job", "victim-user"))
        await observer.wait(1)
    assert observer.attributes == [{"status": "failed", "kind": "unknown"}]


async def test_signing_accepts_the_retiring_token_during_a_rotation(stack: Stack) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    config = settings(auth_enabled=True, auth_token="new-token", auth_token_previous=TOKEN)
    async with running(blank(), config):
        stack.send(memory("rot-new"), token="new-token")
        stack.send(memory("rot-old"), token=TOKEN)
        stack.send(memory("rot-other"), token="unrelated-token")
        await observer.wait(3)
    outcome = {
        e["job_id"]: e["status"] if e["status"] == "succeeded" else e["error"]["code"]
        for e in observer.events
    }
    assert outcome == {"rot-new": "succeeded", "rot-old": "succeeded", None: "unauthorized"}


async def test_signing_off_ignores_signatures(stack: Stack) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    async with running(blank(), settings(auth_enabled=False)):
        stack.send(memory("plain-1"))
        stack.send(memory("plain-2"), attributes={"signature": "nonsense"})
        await observer.wait(2)
    assert [e["status"] for e in observer.events] == ["succeeded", "succeeded"]


async def test_one_bad_request_never_stops_the_loop(stack: Stack) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    async with running(blank()) as handle:
        stack.send("\x00garbage")
        stack.send(memory("after-bad"))
        await observer.wait(2)
        assert not handle.task.done()
    assert sorted(e["status"] for e in observer.events) == ["failed", "succeeded"]


async def test_transient_failure_is_retried_after_the_backoff(stack: Stack) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    generator = blank(failures=[GenerationOOMError("out of memory once")])
    async with running(generator, settings(retry_backoff_base_s=1)) as handle:
        stack.send(memory("t-1"))
        (event,) = await observer.wait(1, within=20)
        retries = handle.worker.metrics.retries.labels(error_code="generation_failed")._value
        assert retries.get() == 1
    assert event["status"] == "succeeded"
    assert event["attempts"] == 2
    (_, first_end), (second_start, _) = generator.spans
    # Hidden for RETRY_BACKOFF_BASE_S * 2^0 = 1 s before the second attempt.
    assert second_start - first_end >= 0.9
    assert _dead_letters(stack) == []


async def test_last_attempt_ends_on_the_dead_letter_queue_retryable(stack: Stack) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    generator = blank(failures=[GenerationOOMError("oom 1"), RuntimeError("CUDA error: oops")])
    async with running(generator, settings(max_attempts=2)):
        stack.send(memory("final-1"))
        (event,) = await observer.wait(1)
        await eventually(lambda: stack.queue_counts() == (0, 0), what="the request deleted")
    assert event["status"] == "failed"
    assert event["attempts"] == 2
    assert event["error"]["code"] == "generation_failed"
    assert event["error"]["retryable"] is True
    assert "CUDA error" in event["error"]["message"]
    (dead,) = _dead_letters(stack)
    assert dead["MessageAttributes"]["error_code"]["StringValue"] == "generation_failed"
    assert len(generator.calls) == 2


async def test_max_attempts_defaults_to_three(stack: Stack) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    generator = blank(failures=[GenerationOOMError("oom")] * 3)
    async with running(generator):
        stack.send(memory("final-3"))
        (event,) = await observer.wait(1)
    assert event["attempts"] == 3  # MAX_ATTEMPTS' default
    assert event["error"]["retryable"] is True
    assert len(generator.calls) == 3


async def test_sns_failing_after_upload_then_recovering(stack: Stack) -> None:
    stack.put_input("avatars/user1.png")
    late_name = f"late-{uuid.uuid4().hex[:8]}"
    late_arn = f"arn:aws:sns:{REGION}:123456789012:{late_name}"
    generator = blank()
    observer = Observer(stack)
    async with running(generator, settings(sns_topic_arn=late_arn, retry_backoff_base_s=1)) as h:
        stack.send(memory("sns-1"))
        retries = h.worker.metrics.retries.labels(error_code="internal_error")._value
        await eventually(lambda: retries.get() >= 1, what="the publish to fail")
        assert stack.outputs() == ["generated/user1/memory_sns-1.png"]
        # SNS comes back: the topic appears, with the observer subscribed.
        _subscribe_observer(stack, late_name)
        (event,) = await observer.wait(1, within=20)
        await eventually(lambda: stack.queue_counts() == (0, 0), what="the request deleted")
    assert event["status"] == "succeeded"
    assert event["reused"] is True
    assert event["attempts"] >= 2
    assert len(generator.calls) == 1
    assert stack.outputs() == ["generated/user1/memory_sns-1.png"]


async def test_sns_failing_while_reporting_a_bad_request_dead_letters_it_once(
    stack: Stack,
) -> None:
    late_name = f"late-{uuid.uuid4().hex[:8]}"
    late_arn = f"arn:aws:sns:{REGION}:123456789012:{late_name}"
    observer = Observer(stack)
    config = settings(sns_topic_arn=late_arn, retry_backoff_base_s=1)
    async with running(blank(), config) as handle:
        stack.send("not json at all")
        retries = handle.worker.metrics.retries.labels(error_code="internal_error")._value
        await eventually(lambda: retries.get() >= 1, what="the report to fail")
        assert _dead_letters(stack) == []
        _subscribe_observer(stack, late_name)
        (event,) = await observer.wait(1, within=20)
        await eventually(lambda: stack.queue_counts() == (0, 0), what="the request deleted")
        assert handle.worker.metrics.loop_errors._value.get() == 0
    assert event["error"]["code"] == "invalid_request"
    # Failing to report is the service's trouble: it uses up no attempt.
    assert event["attempts"] == 1
    (dead,) = _dead_letters(stack)
    assert dead["Body"] == "not json at all"


def _subscribe_observer(stack: Stack, topic_name: str) -> None:
    sns = stack.client("sns")
    arn = sns.create_topic(Name=topic_name)["TopicArn"]
    observer_arn = stack.client("sqs").get_queue_attributes(
        QueueUrl=stack.observer_url, AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    sns.subscribe(
        TopicArn=arn,
        Protocol="sqs",
        Endpoint=observer_arn,
        Attributes={"RawMessageDelivery": "true"},
    )


async def test_fatal_generator_error_stops_the_worker_and_releases(stack: Stack) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    generator = blank(failures=[PipelineBrokenError("out of memory twice in a row")])
    async with running(generator) as handle:
        stack.send(memory("fatal-1"))
        code = await handle.task
        assert code == EXIT_FATAL
        assert handle.worker.state.value == "unhealthy"
        assert handle.worker.board.health().status_code == 503
    # Handed on to another worker, charged the death: visible again at once, no event.
    assert stack.queue_counts() == (1, 0)
    assert await observer.settle(0.3) == []
    assert _dead_letters(stack) == []


async def test_sqs_dlq_url_overrides_the_redrive_policy(stack: Stack) -> None:
    sqs = stack.client("sqs")
    other = sqs.create_queue(QueueName=f"other-dlq-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    await _one_failure(stack, "nope", config=settings(sqs_dlq_url=other))
    assert _dead_letters(stack) == []
    (dead,) = stack.receive_all(other)
    assert dead["Body"] == "nope"


async def test_without_any_dead_letter_queue_the_event_is_still_sent(stack: Stack) -> None:
    sqs = stack.client("sqs")
    plain = sqs.create_queue(QueueName=f"plain-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    observer = Observer(stack)
    async with running(blank(), settings(sqs_queue_url=plain)) as handle:
        sqs.send_message(QueueUrl=plain, MessageBody="not json")
        (event,) = await observer.wait(1)
        await eventually(lambda: stack.queue_counts(plain) == (0, 0), what="deleted")
        assert not handle.task.done()
    assert event["error"]["code"] == "invalid_request"
