"""The real consumer, with WorkerRole's credentials, through every path it has.

Each run is `python -m consumer run` (builtin:blank) on the stack deployed
from infra/illustrator.yaml into a moto server that enforces IAM; AutoBio's
side (inputs, signed requests, cancellations) is done with the producer
role's credentials. After each run every authorization decision moto made
for the worker's role must be "allowed", and every call must be one of the
rows of tests/iam/grants.py, which the policy tables evaluate with the
conditions moto ignores.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import aioboto3
import pytest

from consumer.aws.artifact_cache import ArtifactCache
from tests.chaos.proxy import Fault, Rule, Service, proxy_in_thread
from tests.iam.grants import Names, worker_calls
from tests.iam.stack import OLD_TOKEN, REGION, TOKEN, IamStack
from tests.iam.worker_runs import (
    Producer,
    Worker,
    completion_events,
    queue_messages,
)


class Decisions:
    """moto's authorization decisions for the worker's role since it was made."""

    def __init__(self, stack: IamStack) -> None:
        self.stack = stack
        self.path = stack.server.decisions
        self.start = self.path.stat().st_size if self.path.exists() else 0
        self.role = stack.physical["WorkerRole"]

    def read(self) -> list[dict[str, Any]]:
        with self.path.open(encoding="utf-8") as lines:
            lines.seek(self.start)
            decided = [json.loads(line) for line in lines]
        return [d for d in decided if f":assumed-role/{self.role}/" in d["caller"]]

    def check(self) -> set[tuple[str, str]]:
        """Assert every call was allowed and is a row of the grants; the calls."""
        decided = self.read()
        assert decided, "the worker made no call"
        assert [d for d in decided if not d["allowed"]] == []
        rows = worker_calls(Names.of(self.stack), self.stack.name)
        calls = {(d["action"], d["resource"]) for d in decided}
        unknown = [c for c in calls if not any(row.covers(*c) for row in rows)]
        assert unknown == []
        return {action for action, _ in calls}  # type: ignore[misc]


def _body(message: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(message["Body"]))


def _by_job(events: list[dict[str, Any]]) -> dict[str | None, dict[str, Any]]:
    return {e["job_id"]: e for e in events}


def test_requests_end_as_the_contract_says_with_the_workers_own_role(
    iam_stack: IamStack, tmp_path: Path
) -> None:
    producer = Producer(iam_stack)
    for user in ("ok1", "prio1", "cancel1"):
        producer.upload(user)
    producer.send("job-ok", "ok1")
    producer.send("job-prio", "prio1", priority=True)
    producer.send("job-cancel", "cancel1")
    producer.cancel("cancel1", "job-cancel")
    producer.send("job-missing", "missing1", priority=True)
    producer.send("job-forged", "ok1", token="not-the-signing-token")
    producer.send("job-old-token", "prio1", token=OLD_TOKEN)
    decisions = Decisions(iam_stack)

    worker = Worker(iam_stack, tmp_path / "first.log")
    assert worker.finish() == 0, worker.log.read_text()[-3000:]

    events = _by_job(completion_events(iam_stack))
    assert events["job-ok"]["status"] == "succeeded"
    assert events["job-prio"]["status"] == "succeeded"
    # The previous token (AWSPREVIOUS) still verifies during a rotation.
    assert events["job-old-token"]["status"] == "succeeded"
    assert events["job-cancel"]["status"] == "cancelled"
    assert events["job-missing"]["error"]["code"] == "input_not_found"
    assert events[None]["error"]["code"] == "unauthorized"
    # Each permanent failure went to its own queue's DLQ.
    [priority_dead] = queue_messages(iam_stack, "PriorityDeadLetterQueueUrl")
    assert _body(priority_dead)["job_id"] == "job-missing"
    [dead] = queue_messages(iam_stack, "DeadLetterQueueUrl")
    assert _body(dead)["job_id"] == "job-forged"
    # The forged signature made the worker read its tokens again, once.
    assert worker.logged("signing_keys_reread")
    calls = decisions.check()
    assert {"sns:Publish", "s3:PutObject", "secretsmanager:GetSecretValue"} <= calls
    assert {"sqs:SendMessage", "sqs:DeleteMessage", "sqs:GetQueueUrl"} <= calls

    # A redelivery of a finished job is reused, not drawn again.
    producer.send("job-ok", "ok1")
    again = Worker(iam_stack, tmp_path / "again.log")
    assert again.finish() == 0
    [reused] = completion_events(iam_stack)
    assert (reused["job_id"], reused["reused"]) == ("job-ok", True)
    decisions.check()


def test_a_transient_failure_is_retried_from_a_copy_then_dead_lettered(
    iam_stack: IamStack, tmp_path: Path
) -> None:
    producer = Producer(iam_stack)
    producer.upload("damaged1")
    producer.send("job-damaged", "damaged1")
    decisions = Decisions(iam_stack)
    # S3 refuses every upload with a 4xx that is neither an outage nor the
    # request's fault (a body that arrived damaged): a transient failure.
    damaged = Rule(
        Fault.ERROR, service=Service.S3, operation="PutObject", status=400, code="BadDigest"
    )
    with proxy_in_thread(iam_stack.endpoint, [damaged]) as s3:
        worker = Worker(
            iam_stack,
            tmp_path / "transient.log",
            MAX_ATTEMPTS="2",
            RETRY_BACKOFF_BASE_S="0",
            AWS_ENDPOINT_URL_S3=s3.url,
        )
        assert worker.finish() == 0, worker.log.read_text()[-3000:]
    assert damaged.hits == 2
    assert worker.logged("job_retry_scheduled")
    [failed] = completion_events(iam_stack)
    assert failed["error"] == {
        "code": "internal_error",
        "message": "AWS PutObject failed: BadDigest",
        "retryable": True,
    }
    [dead] = queue_messages(iam_stack, "DeadLetterQueueUrl")
    assert _body(dead)["job_id"] == "job-damaged"
    assert "sqs:SendMessage" in decisions.check()
    resends = [
        d
        for d in decisions.read()
        if d["action"] == "sqs:SendMessage"
        and d["resource"] == iam_stack.queue_arn("RequestQueueUrl")
    ]
    assert resends, "the retry copy was not sent to the request queue"


def _received_once_before(stack: IamStack, output: str) -> None:
    """Receive the queue's request once (and give it back), as a worker that
    was stopped would: the next delivery is its second."""
    sqs = stack.client("sqs")
    [message] = sqs.receive_message(QueueUrl=stack.outputs[output], WaitTimeSeconds=1)["Messages"]
    sqs.change_message_visibility(
        QueueUrl=stack.outputs[output],
        ReceiptHandle=message["ReceiptHandle"],
        VisibilityTimeout=0,
    )


def test_a_drain_releases_a_heartbeaten_job_as_a_fresh_copy(
    iam_stack: IamStack, tmp_path: Path
) -> None:
    producer = Producer(iam_stack)
    producer.upload("drain1")
    sent = producer.send("job-drain", "drain1")
    _received_once_before(iam_stack, "RequestQueueUrl")
    decisions = Decisions(iam_stack)
    worker = Worker(
        iam_stack,
        tmp_path / "drain.log",
        burst=False,
        BLANK_LATENCY_MS="60000",
        # Short, for heartbeats within seconds; long enough that a slow
        # extension under an IAM-enforcing moto on a busy machine does not
        # let the request show again (and be taken a second time).
        VISIBILITY_TIMEOUT_S="6",
        DRAIN_TIMEOUT_S="0",
    )

    def heartbeats() -> int:
        return sum(1 for d in decisions.read() if d["action"] == "sqs:ChangeMessageVisibility")

    worker.wait_for(lambda: heartbeats() >= 2)
    assert worker.drain() == 0
    assert completion_events(iam_stack) == []
    [copy] = _copies(iam_stack, worker)
    assert copy["Body"] == sent["body"]
    # A fresh copy, carrying the count of failures (none): releases cost nothing.
    assert copy["MessageAttributes"]["failed_attempts"]["StringValue"] == "0"
    assert {"sqs:ChangeMessageVisibility", "sqs:SendMessage", "sqs:DeleteMessage"} <= (
        decisions.check()
    )
    _delete(iam_stack, copy)


def test_an_outage_releases_the_request_as_a_fresh_copy(
    iam_stack: IamStack, tmp_path: Path
) -> None:
    producer = Producer(iam_stack)
    producer.upload("outage1")
    sent = producer.send("job-outage", "outage1")
    _received_once_before(iam_stack, "RequestQueueUrl")
    decisions = Decisions(iam_stack)
    # S3 answers the start-up checks and the outage probes, but every read of
    # an object has its connection reset: the input cannot be fetched, an
    # outage, and the request is released each time it is taken.
    cut = Rule(Fault.RESET, service=Service.S3, operation="GetObject")
    with proxy_in_thread(iam_stack.endpoint, [cut]) as s3:
        worker = Worker(iam_stack, tmp_path / "outage.log", burst=False, AWS_ENDPOINT_URL_S3=s3.url)
        worker.wait_for(lambda: worker.logged("job_released"), within=60)
        assert worker.drain() == 0
    # Given back at no cost (a copy carries the same count); a duplicate
    # copy is harmless, the job id makes it one job.
    copies = _copies(iam_stack, worker)
    assert {c["Body"] for c in copies} == {sent["body"]}
    copy = copies[0]
    assert copy["MessageAttributes"]["failed_attempts"]["StringValue"] == "0"
    assert {"sqs:SendMessage", "sqs:DeleteMessage"} <= decisions.check()
    for each in copies:
        _delete(iam_stack, each)


def _copies(stack: IamStack, worker: Worker) -> list[dict[str, Any]]:
    """The request queue's messages once one is there: the released copy may
    first be hidden by the stopped worker's long poll, which moto keeps open."""
    deadline = time.monotonic() + 15
    while not (found := queue_messages(stack, "RequestQueueUrl")):
        assert time.monotonic() < deadline, worker.log.read_text()[-4000:]
        time.sleep(0.2)
    return found


def _delete(stack: IamStack, message: dict[str, Any]) -> None:
    stack.client("sqs").delete_message(
        QueueUrl=stack.outputs["RequestQueueUrl"], ReceiptHandle=message["ReceiptHandle"]
    )


async def test_the_artefact_cache_reads_the_model_prefix(
    iam_stack: IamStack, tmp_path: Path
) -> None:
    bucket = iam_stack.outputs["BucketName"]
    for name in (
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
    ):
        iam_stack.client("s3").put_object(Bucket=bucket, Key=f"models/tiny/{name}", Body=b"{}")
    worker = iam_stack.worker
    session = aioboto3.Session(
        aws_access_key_id=worker.key,
        aws_secret_access_key=worker.secret,
        aws_session_token=worker.token,
        region_name=REGION,
    )
    decisions = Decisions(iam_stack)
    cache = ArtifactCache(
        tmp_path / "cache",
        client_factory=lambda: session.client("s3", endpoint_url=iam_stack.endpoint),
    )
    folder = await cache.fetch_folder(f"s3://{bucket}/models/tiny/")
    assert (folder / "unet" / "config.json").read_bytes() == b"{}"
    assert await cache.fetch_file(f"s3://{bucket}/models/tiny/model_index.json")
    assert {"s3:ListBucket", "s3:GetObject"} <= decisions.check()


def test_the_worker_may_complete_its_own_lifecycle_action(iam_stack: IamStack) -> None:
    # moto authorizes the call, then answers 500: it does not implement
    # CompleteLifecycleAction. The decision is what matters here.
    autoscaling = iam_stack.client("autoscaling", iam_stack.worker)
    decisions = Decisions(iam_stack)
    with pytest.raises(Exception) as raised:  # noqa: PT011  # any answer but a refusal
        autoscaling.complete_lifecycle_action(
            AutoScalingGroupName=f"{iam_stack.name}-workers",
            LifecycleHookName="illustrator-drain",
            InstanceId="i-0123456789abcdef0",
            LifecycleActionResult="CONTINUE",
        )
    assert "AccessDenied" not in str(raised.value)
    assert decisions.check() == {"autoscaling:CompleteLifecycleAction"}


@pytest.mark.parametrize("token", [TOKEN])
def test_the_worker_reads_both_stages_of_its_secret(iam_stack: IamStack, token: str) -> None:
    secrets = iam_stack.client("secretsmanager", iam_stack.worker)
    current = secrets.get_secret_value(SecretId=iam_stack.secret_arn, VersionStage="AWSCURRENT")
    previous = secrets.get_secret_value(SecretId=iam_stack.secret_arn, VersionStage="AWSPREVIOUS")
    assert (current["SecretString"], previous["SecretString"]) == (token, OLD_TOKEN)


def test_a_rotation_while_the_worker_runs_dead_letters_nothing(
    iam_stack: IamStack, tmp_path: Path
) -> None:
    producer = Producer(iam_stack)
    producer.upload("rot1")
    decisions = Decisions(iam_stack)
    seen: list[dict[str, Any]] = []
    worker = Worker(iam_stack, tmp_path / "rotation.log", burst=False)
    producer.send("job-before", "rot1")
    worker.wait_for(lambda: len(completion_events_seen(iam_stack, seen)) >= 1)
    # Secrets Manager's rotation: a new AWSCURRENT, the old one AWSPREVIOUS.
    secrets = iam_stack.client("secretsmanager")
    secrets.put_secret_value(SecretId=iam_stack.secret_arn, SecretString="rotated-token-5e0f")
    try:
        producer.send("job-new-token", "rot1", token="rotated-token-5e0f")
        producer.send("job-old-token", "rot1", token=TOKEN)
        worker.wait_for(lambda: len(completion_events_seen(iam_stack, seen)) >= 3)
    finally:
        secrets.put_secret_value(SecretId=iam_stack.secret_arn, SecretString=OLD_TOKEN)
        secrets.put_secret_value(SecretId=iam_stack.secret_arn, SecretString=TOKEN)
    assert worker.drain() == 0
    statuses = {e["job_id"]: e["status"] for e in seen}
    assert statuses == {
        "job-before": "succeeded",
        "job-new-token": "succeeded",
        "job-old-token": "succeeded",
    }
    assert worker.logged("signing_keys_reread")
    assert queue_messages(iam_stack, "DeadLetterQueueUrl") == []
    decisions.check()


def completion_events_seen(stack: IamStack, into: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events so far, kept in `into` (reading removes them from the queue)."""
    into.extend(completion_events(stack))
    return into
