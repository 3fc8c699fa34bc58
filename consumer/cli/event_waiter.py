"""Waiting for one job's completion event, and fetching its picture.

Waiting subscribes temporary queues to the completion topic, filtered to
the job and to events that name no job, before the request is sent, so the
event cannot be missed; the request's SQS message id tells which event of
an unreadable or unverified request is about it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from consumer.aws.s3_download import parse_s3_uri
from consumer.cli.redrive import DeadLetter

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sqs import SQSClient

    from consumer.cli.dlq_watch import DeadLetterWatch

WAIT_QUEUE_PREFIX = "illustrator-wait-"
# Long enough for one wait; the queue is deleted at the end anyway, this only
# bounds what an orphan (a killed process) could hold.
WAIT_QUEUE_RETENTION_S = 3600
MAX_LONG_POLL_S = 20
# How often the DLQ is looked at while waiting (a look is one GetQueueAttributes
# unless the DLQ has grown).
DLQ_LOOK_S = 10
# How long an event may trail its request's dead-letter copy.
EVENT_GRACE_S = 5
# The SNS attribute `kind` of an event whose request named no readable kind.
UNKNOWN_KIND = "unknown"


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


@dataclass(frozen=True, slots=True)
class Waited:
    """What a wait found: the job's event, or its request in the DLQ without one.

    Attributes:
        event: the completion event of the job; for a request the service
            could not read or verify (``job_id`` null), the event about the
            message that was sent, matched by its ``sqs_message_id``.
        dead_letter: the request found in the dead-letter queue with no event.
    """

    event: dict[str, Any] | None = None
    dead_letter: DeadLetter | None = None

    @property
    def anonymous(self) -> bool:
        """Whether the event names no job: the body was unreadable or unverified."""
        return self.event is not None and self.event.get("job_id") is None


@dataclass(slots=True)
class _Subscription:
    """One temporary queue subscribed to the topic with one filter."""

    queue_url: str | None = None
    subscription_arn: str | None = None


class EventWaiter:
    """Temporary queues subscribed to the completion topic for one job.

    One subscription filters on the body's ``job_id`` (FilterPolicyScope
    MessageBody). An event about a request the service could not read or
    verify (``unauthorized``, a body that is not JSON) names no job: its
    ``job_id`` is null and its SNS attribute ``kind`` is ``unknown``, so a
    second subscription takes those (rare) events, and the one about the
    message sent is told by its ``sqs_message_id``. Events are still checked
    here: a new filter policy can take minutes to apply on AWS, during which
    other jobs' events may arrive.
    """

    def __init__(self, sqs: SQSClient, sns: SNSClient, topic_arn: str, job_id: str) -> None:
        self._sqs = sqs
        self._sns = sns
        self._topic_arn = topic_arn
        self.job_id = job_id
        self.message_ids: set[str] = set()
        self._job = _Subscription()
        self._anonymous = _Subscription()

    @property
    def queue_url(self) -> str | None:
        """The queue of the job's own events."""
        return self._job.queue_url

    async def _subscribe(self, into: _Subscription, attributes: dict[str, str]) -> None:
        name = f"{WAIT_QUEUE_PREFIX}{uuid.uuid4().hex}"
        created = await self._sqs.create_queue(
            QueueName=name,
            Attributes={
                "MessageRetentionPeriod": str(WAIT_QUEUE_RETENTION_S),
                "SqsManagedSseEnabled": "true",
            },
            tags={"created-by": "illustrator-submit", "job-id": self.job_id},
        )
        into.queue_url = created["QueueUrl"]
        answer = await self._sqs.get_queue_attributes(
            QueueUrl=into.queue_url, AttributeNames=["QueueArn"]
        )
        arn = answer["Attributes"]["QueueArn"]
        await self._sqs.set_queue_attributes(
            QueueUrl=into.queue_url, Attributes={"Policy": _queue_policy(arn, self._topic_arn)}
        )
        subscribed = await self._sns.subscribe(
            TopicArn=self._topic_arn,
            Protocol="sqs",
            Endpoint=arn,
            Attributes={"RawMessageDelivery": "true", **attributes},
            ReturnSubscriptionArn=True,
        )
        into.subscription_arn = subscribed["SubscriptionArn"]

    async def open(self) -> None:
        """Create the queues and subscribe them."""
        await self._subscribe(
            self._job,
            {
                "FilterPolicyScope": "MessageBody",
                "FilterPolicy": json.dumps({"job_id": [self.job_id]}),
            },
        )
        await self._subscribe(
            self._anonymous,
            {
                "FilterPolicyScope": "MessageAttributes",
                "FilterPolicy": json.dumps({"kind": [UNKNOWN_KIND]}),
            },
        )

    async def close(self) -> None:
        """Unsubscribe and delete the queues; each step is tried whatever the others did."""
        for subscription in (self._job, self._anonymous):
            if subscription.subscription_arn is not None:
                with suppress(ClientError, BotoCoreError):
                    await self._sns.unsubscribe(SubscriptionArn=subscription.subscription_arn)
                    subscription.subscription_arn = None
            if subscription.queue_url is not None:
                with suppress(ClientError, BotoCoreError):
                    await self._sqs.delete_queue(QueueUrl=subscription.queue_url)
                    subscription.queue_url = None

    def _ours(self, event: dict[str, Any]) -> bool:
        if event.get("job_id") is None:
            return event.get("sqs_message_id") in self.message_ids
        return bool(event.get("job_id") == self.job_id)

    async def _receive(self, url: str, wait_s: int) -> dict[str, Any] | None:
        response = await self._sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_s
        )
        found = None
        for message in response.get("Messages", []):
            await self._sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            event = _event_of(message.get("Body", ""))
            if event is not None and self._ours(event):
                found = found or event
        return found

    async def _poll(self, wait_s: int) -> dict[str, Any] | None:
        """One long poll of both queues at once; the job's event if one came."""
        urls = [s.queue_url for s in (self._job, self._anonymous) if s.queue_url is not None]
        polls = [asyncio.ensure_future(self._receive(url, wait_s)) for url in urls]
        try:
            for finished in asyncio.as_completed(polls):
                event = await finished
                if event is not None:
                    return event
            return None
        finally:
            for poll in polls:
                poll.cancel()

    async def wait(self, timeout_s: float, dead_letters: DeadLetterWatch | None = None) -> Waited:
        """The job's event; else its request found in the DLQ by `dead_letters`
        (looked at after each poll); else an empty :class:`Waited` once
        `timeout_s` has passed (the DLQ then looked at once more)."""
        if self.queue_url is None:
            raise RuntimeError("EventWaiter.wait() before open()")
        deadline = time.monotonic() + timeout_s
        # With a DLQ to look at, polls are shorter so that a look comes often.
        longest = MAX_LONG_POLL_S if dead_letters is None else DLQ_LOOK_S
        while (left := deadline - time.monotonic()) > 0:
            event = await self._poll(max(0, min(longest, int(left))))
            if event is not None:
                return Waited(event=event)
            if dead_letters is not None and (letter := await dead_letters.look()) is not None:
                return await self._grace(letter)
        if dead_letters is not None and (letter := await dead_letters.look(always=True)):
            return Waited(dead_letter=letter)
        return Waited()

    async def _grace(self, letter: DeadLetter) -> Waited:
        # A worker publishes the event before its DLQ copy; SNS may deliver
        # it a moment later. Without one (SQS moved it), the DLQ says all.
        event = await self._poll(EVENT_GRACE_S)
        return Waited(event=event) if event is not None else Waited(dead_letter=letter)


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
