"""What each role must not do, refused by moto's enforcement, and the
operator's commands, which must work with OperatorPolicy alone.

Only rows moto can decide are here (no condition, a resource it names); the
rest are in test_policies.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from consumer.cli import main as cli
from tests.iam.stack import IamStack
from tests.iam.worker_runs import Producer, completion_events, queue_messages

Attempt = Callable[[IamStack], object]


def _s3(who: str, method: str, key: str, **extra: Any) -> Attempt:
    def attempt(stack: IamStack) -> object:
        s3 = stack.client("s3", getattr(stack, who))
        return getattr(s3, method)(Bucket=stack.outputs["BucketName"], Key=key, **extra)

    return attempt


def _sqs(who: str, method: str, output: str, **extra: Any) -> Attempt:
    def attempt(stack: IamStack) -> object:
        sqs = stack.client("sqs", getattr(stack, who))
        return getattr(sqs, method)(QueueUrl=stack.outputs[output], **extra)

    return attempt


def _call(who: str, service: str, method: str, **arguments: Any) -> Attempt:
    def attempt(stack: IamStack) -> object:
        values = {k: (v(stack) if callable(v) else v) for k, v in arguments.items()}
        return getattr(stack.client(service, getattr(stack, who)), method)(**values)

    return attempt


def _topic(stack: IamStack) -> str:
    return stack.outputs["CompletionTopicArn"]


DENIED: dict[str, Attempt] = {
    # The worker: only its queues, its topic, its prefixes, its secret.
    "worker writes an input": _s3("worker", "put_object", "avatars/u1.png", Body=b"x"),
    "worker writes a model file": _s3("worker", "put_object", "models/m/x.bin", Body=b"x"),
    "worker writes a cancellation": _s3("worker", "put_object", "cancellations/u/j", Body=b""),
    "worker deletes an output": _s3("worker", "delete_object", "generated/u1/memory_j.png"),
    "worker reads outside its prefixes": _s3("worker", "get_object", "elsewhere/x"),
    "worker receives from the events queue": _sqs("worker", "receive_message", "EventsQueueUrl"),
    "worker sends to the events queue": _sqs(
        "worker", "send_message", "EventsQueueUrl", MessageBody="x"
    ),
    "worker receives from the DLQ": _sqs("worker", "receive_message", "DeadLetterQueueUrl"),
    "worker purges the request queue": _sqs("worker", "purge_queue", "RequestQueueUrl"),
    "worker changes the request queue": _sqs(
        "worker", "set_queue_attributes", "RequestQueueUrl", Attributes={"DelaySeconds": "1"}
    ),
    "worker publishes to another topic": _call(
        "worker",
        "sns",
        "publish",
        TopicArn=lambda s: _topic(s).replace("-completions", "-other"),
        Message="x",
    ),
    "worker subscribes to its topic": _call(
        "worker", "sns", "subscribe", TopicArn=_topic, Protocol="sqs", Endpoint="arn:aws:sqs:x"
    ),
    "worker reads another secret": _call(
        "worker", "secretsmanager", "get_secret_value", SecretId="some-other-secret"
    ),
    # The producer: never the consumer's side.
    "producer receives from the request queue": _sqs(
        "producer", "receive_message", "RequestQueueUrl"
    ),
    "producer receives from the priority queue": _sqs(
        "producer", "receive_message", "PriorityQueueUrl"
    ),
    "producer sends to the DLQ": _sqs(
        "producer", "send_message", "DeadLetterQueueUrl", MessageBody="x"
    ),
    "producer purges the request queue": _sqs("producer", "purge_queue", "RequestQueueUrl"),
    "producer reads a user's input": _s3("producer", "get_object", "avatars/u1.png"),
    "producer writes an output": _s3(
        "producer", "put_object", "generated/u1/memory_j.png", Body=b"x"
    ),
    "producer writes a model file": _s3("producer", "put_object", "models/m/x.bin", Body=b"x"),
    "producer publishes an event": _call(
        "producer", "sns", "publish", TopicArn=_topic, Message="x"
    ),
    "producer reads the signing secret": _call(
        "producer", "secretsmanager", "get_secret_value", SecretId=lambda s: s.secret_arn
    ),
    # The operator: the commands' calls, nothing of the live queues' consumption.
    "operator receives from the request queue": _sqs(
        "operator", "receive_message", "RequestQueueUrl"
    ),
    "operator purges the request queue": _sqs("operator", "purge_queue", "RequestQueueUrl"),
    "operator deletes the request queue": _sqs("operator", "delete_queue", "RequestQueueUrl"),
    "operator writes an output": _s3(
        "operator", "put_object", "generated/u1/memory_j.png", Body=b"x"
    ),
    "operator reads a user's input": _s3("operator", "get_object", "avatars/u1.png"),
    "operator publishes an event": _call(
        "operator", "sns", "publish", TopicArn=_topic, Message="x"
    ),
    "operator reads the signing secret": _call(
        "operator", "secretsmanager", "get_secret_value", SecretId=lambda s: s.secret_arn
    ),
}


@pytest.mark.parametrize("name", sorted(DENIED))
def test_refused(iam_stack: IamStack, name: str) -> None:
    with pytest.raises(ClientError) as refused:
        DENIED[name](iam_stack)
    error = refused.value.response.get("Error", {})
    assert error.get("Code") in ("AccessDenied", "AccessDeniedException", "403"), error


@pytest.fixture
def as_operator(iam_stack: IamStack, monkeypatch: pytest.MonkeyPatch) -> IamStack:
    """The environment of a person whose role has OperatorPolicy, and nothing else."""
    for name, value in iam_stack.operator.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", iam_stack.endpoint)
    monkeypatch.setenv("SQS_QUEUE_URL", iam_stack.outputs["RequestQueueUrl"])
    monkeypatch.setenv("SQS_PRIORITY_QUEUE_URL", iam_stack.outputs["PriorityQueueUrl"])
    monkeypatch.setenv("SNS_TOPIC_ARN", iam_stack.outputs["CompletionTopicArn"])
    monkeypatch.setenv("S3_BUCKET_NAME", iam_stack.outputs["BucketName"])
    return iam_stack


def test_the_operator_commands_work_with_the_operator_policy(
    as_operator: IamStack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = as_operator
    Producer(stack).send("job-dead", "u-op")
    # A request to redrive: moved to the DLQ by the administrator.
    sqs = stack.client("sqs")
    [message] = queue_messages(stack, "RequestQueueUrl")
    sqs.send_message(QueueUrl=stack.outputs["DeadLetterQueueUrl"], MessageBody=message["Body"])
    sqs.delete_message(
        QueueUrl=stack.outputs["RequestQueueUrl"], ReceiptHandle=message["ReceiptHandle"]
    )

    assert cli.main(["submit", "subject", "--user-id", "u-op", "--job-id", "op-1"]) == 0
    assert cli.main(["submit", "subject", "--user-id", "u-op", "--priority"]) == 0
    assert cli.main(["cancel", "op-1", "--user", "u-op"]) == 0
    assert cli.main(["dlq", "list"]) == 0
    assert "job-dead" in capsys.readouterr().out
    assert cli.main(["dlq", "redrive"]) == 0
    assert cli.main(["dlq", "--priority", "list"]) == 0
    assert cli.main(["dlq", "purge", "--yes"]) == 0
    jobs = {m["Body"] for m in queue_messages(stack, "RequestQueueUrl")}
    assert any('"job-dead"' in body for body in jobs)
    assert any('"op-1"' in body for body in jobs)
    assert len(queue_messages(stack, "PriorityQueueUrl")) == 1
    for output in ("RequestQueueUrl", "PriorityQueueUrl"):
        stack.client("sqs").purge_queue(QueueUrl=stack.outputs[output])
    assert completion_events(stack) == []


def test_purge_refuses_a_request_queue(
    as_operator: IamStack,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A DLQ setting that is in truth the priority queue: a source queue.
    monkeypatch.setenv("SQS_DLQ_URL", as_operator.outputs["PriorityQueueUrl"])
    monkeypatch.delenv("SQS_PRIORITY_QUEUE_URL")
    assert cli.main(["dlq", "purge", "--yes"]) == 2
    assert "RedrivePolicy" in capsys.readouterr().err
