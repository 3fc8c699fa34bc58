"""Waiting for one job's completion event, and fetching its picture.

Waiting subscribes a temporary queue to the completion topic, filtered to
the job, before the request is sent, so the event cannot be missed.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from consumer.aws.s3_download import parse_s3_uri

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sqs import SQSClient

WAIT_QUEUE_PREFIX = "illustrator-wait-"
# Long enough for one wait; the queue is deleted at the end anyway, this only
# bounds what an orphan (a killed process) could hold.
WAIT_QUEUE_RETENTION_S = 3600
MAX_LONG_POLL_S = 20


def _queue_policy(queue_arn: str, topic_arn: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "CompletionTopicDelivers",
                    "Effect": "Allow",
                    "Principal": {"Service": "sns.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
                }
            ],
        }
    )


def _event_of(body: str) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    # Raw delivery gives the event itself; without it SNS wraps it.
    if data.get("Type") == "Notification" and isinstance(data.get("Message"), str):
        return _event_of(data["Message"])
    return data


class EventWaiter:
    """A temporary queue subscribed to the completion topic for one job.

    The subscription filters on the body's ``job_id`` (FilterPolicyScope
    MessageBody). Events are still checked here: a new filter policy can take
    minutes to apply on AWS, during which other jobs' events may arrive.
    """

    def __init__(self, sqs: SQSClient, sns: SNSClient, topic_arn: str, job_id: str) -> None:
        self._sqs = sqs
        self._sns = sns
        self._topic_arn = topic_arn
        self.job_id = job_id
        self.queue_url: str | None = None
        self.subscription_arn: str | None = None

    async def open(self) -> None:
        """Create the queue and subscribe it."""
        name = f"{WAIT_QUEUE_PREFIX}{uuid.uuid4().hex}"
        created = await self._sqs.create_queue(
            QueueName=name,
            Attributes={
                "MessageRetentionPeriod": str(WAIT_QUEUE_RETENTION_S),
                "SqsManagedSseEnabled": "true",
            },
            tags={"created-by": "illustrator-submit", "job-id": self.job_id},
        )
        self.queue_url = created["QueueUrl"]
        attributes = await self._sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["QueueArn"]
        )
        arn = attributes["Attributes"]["QueueArn"]
        await self._sqs.set_queue_attributes(
            QueueUrl=self.queue_url, Attributes={"Policy": _queue_policy(arn, self._topic_arn)}
        )
        subscribed = await self._sns.subscribe(
            TopicArn=self._topic_arn,
            Protocol="sqs",
            Endpoint=arn,
            Attributes={
                "RawMessageDelivery": "true",
                "FilterPolicyScope": "MessageBody",
                "FilterPolicy": json.dumps({"job_id": [self.job_id]}),
            },
            ReturnSubscriptionArn=True,
        )
        self.subscription_arn = subscribed["SubscriptionArn"]

    async def close(self) -> None:
        """Unsubscribe and delete the queue; each step is tried whatever the other did."""
        if self.subscription_arn is not None:
            with suppress(ClientError, BotoCoreError):
                await self._sns.unsubscribe(SubscriptionArn=self.subscription_arn)
                self.subscription_arn = None
        if self.queue_url is not None:
            with suppress(ClientError, BotoCoreError):
                await self._sqs.delete_queue(QueueUrl=self.queue_url)
                self.queue_url = None

    async def wait(self, timeout_s: float) -> dict[str, Any] | None:
        """The job's event, or ``None`` once `timeout_s` has passed."""
        if self.queue_url is None:
            raise RuntimeError("EventWaiter.wait() before open()")
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            response = await self._sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=max(0, min(MAX_LONG_POLL_S, int(left))),
            )
            for message in response.get("Messages", []):
                await self._sqs.delete_message(
                    QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )
                event = _event_of(message.get("Body", ""))
                if event is not None and event.get("job_id") == self.job_id:
                    return event
        return None


@asynccontextmanager
async def waiting_for(
    sqs: SQSClient, sns: SNSClient, topic_arn: str, job_id: str
) -> AsyncIterator[EventWaiter]:
    """An open :class:`EventWaiter`, closed whatever happens (Ctrl-C included)."""
    waiter = EventWaiter(sqs, sns, topic_arn, job_id)
    try:
        await waiter.open()
        yield waiter
    finally:
        # An interrupt arrives as one cancellation of the wait; the awaits
        # of the clean-up after it run normally.
        await waiter.close()


async def download(s3: S3Client, uri: str, out: Path) -> int:
    """Save the object at `uri` to `out`; the number of bytes written."""
    where = parse_s3_uri(uri)
    response = await s3.get_object(Bucket=where.bucket, Key=where.key)
    async with response["Body"] as stream:
        data = await stream.read()
    await asyncio.to_thread(_write, out, data)
    return len(data)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
