"""The whole bad-input corpus through a live consumer process.

One `illustrator run` child (builtin:blank, AUTH_ENABLED=true) on moto's
server gets every request and every image of the corpus. Each message must
end in exactly one completion event with the expected status or error code,
failures on the dead-letter queue with their body and attributes intact,
successes as one PNG each; the process must not crash, its sidecar must stay
healthy throughout, and neither its logs nor its sidecar may show a secret.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from consumer.contract.signing import sign
from tests.chaos.process import ConsumerProcess, consumer_environment
from tests.corpus.corpus import (
    AUTH_TOKEN,
    CORPUS_USER,
    image_cases,
    request_cases,
    signature_for,
)
from tests.corpus.make_images import builders
from tests.support.aws import FAKE_CREDENTIALS, Stack

WITHIN_S = 150.0
SIDECAR_PATHS = ("/health", "/health/", "/livez", "/readyz", "/metrics")
# What the sidecar and the logs must never show.
SECRETS = (AUTH_TOKEN, FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])


def _job_id(image_name: str) -> str:
    return "img-" + re.sub(r"[^A-Za-z0-9_-]", "-", image_name)


class Sent:
    """What was sent: message id -> (case name, body, expected outcome)."""

    def __init__(self) -> None:
        self.by_id: dict[str, tuple[str, str, str]] = {}

    def add(self, stack: Stack, name: str, body: str, expect: str, signature: str | None) -> None:
        attributes = {}
        if signature is not None:
            attributes["signature"] = {"DataType": "String", "StringValue": signature}
        response = stack.client("sqs").send_message(
            QueueUrl=stack.queue_url, MessageBody=body, MessageAttributes=attributes
        )
        self.by_id[response["MessageId"]] = (name, body, expect)


def _send_corpus(stack: Stack) -> Sent:
    s3 = stack.client("s3")
    picture = builders()["rgb.png"]()
    for prefix in ("avatars/", "subjects/"):
        s3.put_object(Bucket=stack.bucket, Key=f"{prefix}{CORPUS_USER}.png", Body=picture)
    sent = Sent()
    for case in request_cases():
        if case.text is not None:  # SQS carries text only; the rest is tested by parsing
            sent.add(stack, case.name, case.text, case.expect_live, signature_for(case))
    for image in image_cases():
        key = f"avatars/{CORPUS_USER}/corpus/{image.name}"
        s3.put_object(Bucket=stack.bucket, Key=key, Body=image.data)
        body = json.dumps(
            {
                "job_id": _job_id(image.name),
                "kind": "memory",
                "user_id": CORPUS_USER,
                "prompt": "a lighthouse",
                "image_key": key,
                "width": 64,
                "height": 64,
            }
        )
        expect = "succeeded" if image.expect == "ok" else image.expect
        sent.add(stack, image.name, body, expect, sign(body.encode(), AUTH_TOKEN))
    return sent


def _drain(stack: Stack, url: str) -> list[dict[str, Any]]:
    sqs = stack.client("sqs")
    found: list[dict[str, Any]] = []
    while True:
        response = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        )
        messages = response.get("Messages", [])
        if not messages:
            return found
        for message in messages:
            found.append(message)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture
def consumer(stack: Stack, tmp_path: Path) -> ConsumerProcess:
    env = consumer_environment(
        stack.environment(),
        MODEL_PATH="builtin:blank",
        AUTH_ENABLED="true",
        AUTH_TOKEN=AUTH_TOKEN,
        HEALTH_HOST="127.0.0.1",
        HEALTH_PORT="0",
        LOG_LEVEL="debug",
        RETRY_BACKOFF_BASE_S="0",
        WORKER_ID="corpus",
    )
    return ConsumerProcess("corpus", env, tmp_path / "consumer")


def test_the_corpus_through_a_live_consumer(stack: Stack, consumer: ConsumerProcess) -> None:
    sent = _send_corpus(stack)
    consumer.start()
    try:
        consumer.wait_healthy()
        events: list[dict[str, Any]] = []
        health: Counter[int] = Counter()
        deadline = time.monotonic() + WITHIN_S
        while {e["sqs_message_id"] for e in events} < set(sent.by_id):
            assert consumer.alive, consumer.logs()[-3000:]
            assert time.monotonic() < deadline, f"only {len(events)} of {len(sent.by_id)} events"
            health[consumer.probe().status] += 1
            events += [json.loads(m["Body"]) for m in _drain(stack, stack.observer_url)]
        probes = [consumer.probe(path) for path in SIDECAR_PATHS]
        events += [json.loads(m["Body"]) for m in _drain(stack, stack.observer_url)]
    finally:
        status = consumer.terminate() if consumer.alive else None
    assert status == 0
    assert set(health) == {200}, f"the sidecar was not always healthy: {health}"
    assert [p.status for p in probes] == [200] * len(SIDECAR_PATHS)

    _check_events(sent, events)
    _check_dead_letters(stack, sent, events)
    _check_outputs(stack, events)
    logs = consumer.logs()
    for secret in SECRETS:
        assert secret not in logs
        for probe in probes:
            assert secret not in probe.body, probe.path
    for probe in probes:
        for detail in (stack.queue_url, stack.topic_arn, "123456789012"):
            assert detail not in probe.body, (probe.path, detail)


def _check_events(sent: Sent, events: list[dict[str, Any]]) -> None:
    per_message = Counter(e["sqs_message_id"] for e in events)
    assert set(per_message) == set(sent.by_id)
    assert max(per_message.values()) == 1, "one event per message"
    wrong = []
    for event in events:
        name, _, expect = sent.by_id[event["sqs_message_id"]]
        got = event["status"] if event["status"] == "succeeded" else event["error"]["code"]
        if got != expect:
            wrong.append((name, expect, got, event.get("error")))
        if event["status"] == "failed":
            assert event["error"]["retryable"] is False, name
            assert 0 < len(event["error"]["message"]) <= 500, name
            assert event["attempts"] == 1, name
        assert len(json.dumps(event)) < 64 * 1024, name
    assert not wrong, wrong
    for event in events:
        if event["status"] == "failed" and event["error"]["code"] == "unauthorized":
            # An unverified body names nobody.
            assert (event["job_id"], event["kind"], event["user_id"]) == (None, None, None)
    named = {c.name: c for c in request_cases()}
    for event in events:
        case = named.get(sent.by_id[event["sqs_message_id"]][0])
        if case is not None and case.expect_job_id is not None:
            assert event["job_id"] == case.expect_job_id


def _check_dead_letters(stack: Stack, sent: Sent, events: list[dict[str, Any]]) -> None:
    failed = Counter(sent.by_id[e["sqs_message_id"]][1] for e in events if e["status"] == "failed")
    codes = {
        sent.by_id[e["sqs_message_id"]][1]: e["error"]["code"]
        for e in events
        if e["status"] == "failed"
    }
    dead = _drain(stack, stack.dlq_url)
    assert Counter(m["Body"] for m in dead) == failed, "one dead letter per failure, body intact"
    for message in dead:
        attributes = message["MessageAttributes"]
        assert attributes["error_code"]["StringValue"] == codes[message["Body"]]
        assert attributes["error_message"]["StringValue"]


def _check_outputs(stack: Stack, events: list[dict[str, Any]]) -> None:
    listed = stack.client("s3").list_objects_v2(Bucket=stack.bucket, Prefix="generated/")
    keys = sorted(item["Key"] for item in listed.get("Contents", []))
    expected = sorted(
        f"generated/{e['user_id']}/{e['kind']}_{e['job_id']}.png"
        for e in events
        if e["status"] == "succeeded"
    )
    assert keys == expected
    assert len(keys) == len(set(keys))
