"""A moto server on loopback and the AWS resources a test needs on it.

Tests reach it through the same aioboto3/boto3 clients as production, by
``AWS_ENDPOINT_URL``; every test makes resources with unique names, so one
server serves the whole session.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from consumer.cli.local_aws import REGION, Sandbox, SandboxResources, create_resources
from consumer.contract.signing import sign
from tests.support.helpers import png

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


class MotoEndpoint:
    """The embedded endpoint of :mod:`consumer.cli.local_aws`, leaving the
    process environment alone: tests pass the endpoint explicitly."""

    def __init__(self) -> None:
        self._sandbox = Sandbox(point_environment=False)

    def start(self) -> str:
        """Start the server and return its URL."""
        self.url = self._sandbox.start()
        return self.url

    def stop(self) -> None:
        """Stop the server."""
        self._sandbox.stop()


@dataclass(frozen=True)
class Stack(SandboxResources):
    """The resources of one test, with the helpers tests use to read them."""

    def environment(self) -> dict[str, str]:
        """The settings that point the consumer at this stack, with the
        tests' own placeholder credentials."""
        return {**super().environment(), **FAKE_CREDENTIALS}

    def put(self, key: str, body: bytes) -> str:
        """Upload one object; its ``s3://`` URI."""
        self.client("s3").put_object(Bucket=self.bucket, Key=key, Body=body)
        return f"s3://{self.bucket}/{key}"

    def upload_folder(self, folder: Path, prefix: str) -> str:
        """Upload every file below `folder` under `prefix`; the folder's ``s3://`` URI."""
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                self.put(f"{prefix}/{path.relative_to(folder).as_posix()}", path.read_bytes())
        return f"s3://{self.bucket}/{prefix}"

    def put_input(self, key: str, data: bytes | None = None) -> None:
        """Upload an input picture (a small PNG unless `data`)."""
        self.put(key, data or png())

    def send(
        self,
        body: dict[str, Any] | str,
        *,
        attributes: dict[str, str] | None = None,
        token: str | None = None,
    ) -> str:
        """Send a request (a dict is sent as JSON); `token` signs it. Returns the message id."""
        text = body if isinstance(body, str) else json.dumps(body)
        attrs = {k: {"DataType": "String", "StringValue": v} for k, v in (attributes or {}).items()}
        if token is not None:
            attrs["signature"] = {"DataType": "String", "StringValue": sign(text.encode(), token)}
        response = self.client("sqs").send_message(
            QueueUrl=self.queue_url, MessageBody=text, MessageAttributes=attrs
        )
        return str(response["MessageId"])

    def queue_counts(self, url: str | None = None) -> tuple[int, int]:
        """(visible, in flight) messages of the request queue (or `url`)."""
        attributes = self.client("sqs").get_queue_attributes(
            QueueUrl=url or self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return (
            int(attributes["ApproximateNumberOfMessages"]),
            int(attributes["ApproximateNumberOfMessagesNotVisible"]),
        )

    def receive_all(self, url: str, wait_s: int = 0) -> list[dict[str, Any]]:
        """Receive (and hide) every visible message of `url`, with their attributes."""
        response = self.client("sqs").receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=wait_s,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        )
        return list(response.get("Messages", []))

    def outputs(self, prefix: str = "generated/") -> list[str]:
        """The keys of generated objects."""
        response = self.client("s3").list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for item in response.get("Contents", [])]

    def events(self, wait_s: int = 0, max_messages: int = 10) -> list[dict[str, Any]]:
        """Completion events received by the observer queue so far."""
        sqs = self.client("sqs")
        found = []
        response = sqs.receive_message(
            QueueUrl=self.observer_url,
            MaxNumberOfMessages=max_messages,
            WaitTimeSeconds=wait_s,
            MessageAttributeNames=["All"],
        )
        for message in response.get("Messages", []):
            found.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=self.observer_url, ReceiptHandle=message["ReceiptHandle"])
        return found


def make_stack(endpoint: str, *, visibility_timeout: int = 30, max_receive_count: int = 3) -> Stack:
    """Create a fresh queue, DLQ, topic, bucket and observer on `endpoint`."""
    made = create_resources(
        endpoint, "test", visibility_timeout=visibility_timeout, max_receive_count=max_receive_count
    )
    return Stack(**asdict(made))
