"""The integration examples under docs/examples work against the embedded AWS.

The producer signs and sends; the consumer (builtin:blank, in this process)
draws; two subscribers, one with raw delivery and one with SNS's envelope,
each receive only the events of the status they filter on.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from consumer.cli import samples
from consumer.cli.local_aws import Sandbox, SandboxResources, local_settings
from consumer.cli.run import load_generator
from consumer.delivery.options import WorkerOptions
from consumer.service.wiring import serve

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
TOKEN = "example-token"
TIMEOUT_S = 60


@pytest.fixture
def stack() -> Iterator[tuple[Sandbox, SandboxResources]]:
    sandbox = Sandbox()
    sandbox.start()
    try:
        resources = sandbox.create("examples")
        sandbox.client("s3").put_object(
            Bucket=resources.bucket, Key="avatars/demo.png", Body=samples.avatar()
        )
        yield sandbox, resources
    finally:
        sandbox.stop()


def _environment(resources: SandboxResources, **extra: str) -> dict[str, str]:
    # The sandbox pointed this process's AWS chain at itself; the scripts inherit it.
    env = {name: value for name, value in os.environ.items() if name != "AUTH_TOKEN"}
    env.update(SQS_QUEUE_URL=resources.queue_url, SNS_TOPIC_ARN=resources.topic_arn, **extra)
    return env


def _subscriber(resources: SandboxResources, *options: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "subscriber.py"), "--timeout", str(TIMEOUT_S), *options],
        env=_environment(resources),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    # Subscribed before anything is sent, so no event can slip by.
    line = process.stderr.readline()
    assert line.startswith("subscribed "), line + process.stderr.read()
    return process


def _produce(resources: SandboxResources, token: str, job_id: str) -> None:
    job = ["memory", "--user-id", "demo", "--prompt", "a day at the sea", "--job-id", job_id]
    subprocess.run(
        [sys.executable, str(EXAMPLES / "producer.py"), *job],
        env=_environment(resources, AUTH_TOKEN=token),
        check=True,
        timeout=TIMEOUT_S,
    )


def _events(process: subprocess.Popen[str]) -> list[dict[str, object]]:
    out, err = process.communicate(timeout=TIMEOUT_S + 10)
    assert process.returncode == 0, err
    return [json.loads(line) for line in out.splitlines()]


def test_signed_requests_succeed_and_subscribers_get_the_status_they_filter_on(
    stack: tuple[Sandbox, SandboxResources],
) -> None:
    sandbox, resources = stack
    enveloped = _subscriber(resources, "--status", "succeeded")
    raw = _subscriber(resources, "--raw", "--status", "failed")

    _produce(resources, TOKEN, "signed-1")
    _produce(resources, "not-the-token", "forged-1")
    messages = sandbox.client("sqs").receive_message(
        QueueUrl=resources.queue_url,
        MessageAttributeNames=["All"],
        AttributeNames=["All"],
        VisibilityTimeout=0,
        MaxNumberOfMessages=10,
    )["Messages"]
    assert {m["Attributes"].get("MessageGroupId") for m in messages} == {"demo"}

    settings = local_settings(resources, model="builtin:blank", worker_id="examples")
    settings = settings.model_copy(update={"auth_enabled": True, "auth_token": SecretStr(TOKEN)})
    assert (
        asyncio.run(
            serve(settings, load_generator, options=WorkerOptions(burst=True, poll_wait_s=1))
        )
        == 0
    )

    (succeeded,) = _events(enveloped)
    assert (succeeded["job_id"], succeeded["status"]) == ("signed-1", "succeeded")
    (failed,) = _events(raw)
    # A forged request's event names nobody.
    assert (failed["job_id"], failed["kind"], failed["user_id"]) == (None, None, None)
    assert failed["status"] == "failed"
    error = failed["error"]
    assert isinstance(error, dict)
    assert (error["code"], error["retryable"]) == ("unauthorized", False)


def test_a_job_cancelled_through_the_producer_example_ends_cancelled(
    stack: tuple[Sandbox, SandboxResources],
) -> None:
    sandbox, resources = stack
    cancelled = _subscriber(resources, "--status", "cancelled")
    _produce(resources, "", "to-cancel")
    command = ["cancel", "--user-id", "demo", "--job-id", "to-cancel"]
    subprocess.run(
        [sys.executable, str(EXAMPLES / "producer.py"), *command],
        env=_environment(resources, S3_BUCKET_NAME=resources.bucket),
        check=True,
        timeout=TIMEOUT_S,
    )
    marker = sandbox.client("s3").head_object(
        Bucket=resources.bucket, Key="cancellations/demo/to-cancel"
    )
    assert marker["ContentLength"] == 0

    settings = local_settings(resources, model="builtin:blank", worker_id="examples")
    options = WorkerOptions(burst=True, poll_wait_s=1)
    assert asyncio.run(serve(settings, load_generator, options=options)) == 0

    (event,) = _events(cancelled)
    assert (event["job_id"], event["status"]) == ("to-cancel", "cancelled")
    listed = sandbox.client("s3").list_objects_v2(Bucket=resources.bucket, Prefix="generated/")
    assert listed.get("KeyCount", 0) == 0
