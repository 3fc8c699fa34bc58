"""A moto server on loopback and the AWS resources a test needs on it.

Tests reach it through the same aioboto3/boto3 clients as production, by
``AWS_ENDPOINT_URL``; every test makes resources with unique names, so one
server serves the whole session.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


class MotoEndpoint:
    """A moto server on 127.0.0.1 with a free port, started and stopped by hand."""

    def __init__(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)

    def start(self) -> str:
        """Start the server and return its URL."""
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        return self.url

    def stop(self) -> None:
        """Stop the server."""
        self._server.stop()


@dataclass
class Stack:
    """The resources of one test: a queue with a DLQ, a topic, a bucket, and an
    observer queue subscribed to the topic (raw delivery) to read events."""

    endpoint: str
    queue_url: str
    dlq_url: str
    topic_arn: str
    bucket: str
    observer_url: str

    def client(self, service: str) -> Any:
        """A synchronous boto3 client on the moto endpoint."""
        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION)

    def environment(self) -> dict[str, str]:
        """The settings that point the consumer at this stack."""
        return {
            **FAKE_CREDENTIALS,
            "AWS_ENDPOINT_URL": self.endpoint,
            "SQS_QUEUE_URL": self.queue_url,
            "SNS_TOPIC_ARN": self.topic_arn,
            "S3_BUCKET_NAME": self.bucket,
        }

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
    name = uuid.uuid4().hex[:12]
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=REGION)
    sns = boto3.client("sns", endpoint_url=endpoint, region_name=REGION)
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
    dlq_url = sqs.create_queue(QueueName=f"dlq-{name}")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    queue_url = sqs.create_queue(
        QueueName=f"requests-{name}",
        Attributes={
            "VisibilityTimeout": str(visibility_timeout),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
            ),
        },
    )["QueueUrl"]
    topic_arn = sns.create_topic(Name=f"events-{name}")["TopicArn"]
    observer_url = sqs.create_queue(QueueName=f"observer-{name}")["QueueUrl"]
    observer_arn = sqs.get_queue_attributes(QueueUrl=observer_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=observer_arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    bucket = f"bucket-{name}"
    s3.create_bucket(Bucket=bucket)
    return Stack(endpoint, queue_url, dlq_url, topic_arn, bucket, observer_url)
