"""A moto server on loopback and the AWS resources a test needs on it.

Tests reach it through the same aioboto3/boto3 clients as production, by
``AWS_ENDPOINT_URL``; every test makes resources with unique names, so one
server serves the whole session.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from consumer.cli.local_aws import REGION, Sandbox, SandboxResources, create_resources

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
