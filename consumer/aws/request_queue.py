"""The request queue (SQS): receive, hide, release, dead-letter, delete.

Only what the worker needs, as small methods over an aioboto3 SQS client.
Every call here may raise botocore errors; :mod:`consumer.classify` decides
what they mean.

Dead-letter copies and SQS's limit of 10 message attributes: the copy keeps
the body and the attributes unchanged and adds ``error_code`` and
``error_message``. When that would pass 10, ``error_code``,
``error_message`` and ``signature`` are always kept, and of the others the
first by name (ordinal order of the names) fill the remaining places; the
names of the ones left out are appended to ``error_message`` as
``" (attributes dropped: a, b)"``, so an operator can tell. The copy keeps
the request's ``MessageGroupId`` too, so a redriven request stays in its
user's fair-queue group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from consumer.aws.queue_meta import copyable_attributes, redrive_policy, url_of_arn
from consumer.clock import Clock, epoch_ms
from consumer.contract.signing import SIGNATURE_ATTRIBUTE

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import MessageAttributeValueTypeDef

ERROR_CODE_ATTRIBUTE = "error_code"
ERROR_MESSAGE_ATTRIBUTE = "error_message"
# The failed attempts a re-sent copy carries (consumer.delivery.attempts); a
# dead-letter copy leaves it behind, so a redriven request starts afresh.
ATTEMPTS_ATTRIBUTE = "failed_attempts"
# The worker deaths a copy is charged with (consumer.delivery.retry_policy);
# left behind by a dead-letter copy too.
DEATHS_ATTRIBUTE = "worker_deaths"
# SQS counts attribute values towards the message size; keep ours small.
MAX_ERROR_MESSAGE = 1000
# SQS rejects a message with more message attributes than this.
MAX_MESSAGE_ATTRIBUTES = 10
# The system attribute naming a request's fair-queue group (its user).
GROUP_ATTRIBUTE: Final = "MessageGroupId"
# Kept on a dead-letter copy whatever else must go.
_ALWAYS_KEPT = (SIGNATURE_ATTRIBUTE,)


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """One received request and what SQS said about it.

    Attributes:
        received_at: monotonic time just before the receive call was sent, so
            deadlines computed from it err on the early side.
        received_at_ms: wall-clock time of the receipt, for ``queue_wait``.
        returned_at: monotonic time just after the receive call returned, the
            start of ``timings_ms.total`` (the long poll before it is idle
            time, not the job's); ``None`` means `received_at`.
    """

    message_id: str
    receipt_handle: str
    body: str
    attributes: dict[str, str]
    message_attributes: dict[str, Any]
    received_at: float
    received_at_ms: int
    returned_at: float | None = None

    @property
    def arrived_at(self) -> float:
        """When the request reached the worker (monotonic): the start of ``total``."""
        return self.received_at if self.returned_at is None else self.returned_at

    @property
    def body_bytes(self) -> bytes:
        """The raw body, as signed by the producer."""
        return self.body.encode("utf-8")

    @property
    def receive_count(self) -> int:
        """This delivery's attempt number, from ``ApproximateReceiveCount``."""
        try:
            return max(1, int(self.attributes.get("ApproximateReceiveCount", "1")))
        except ValueError:
            return 1

    @property
    def queue_wait_ms(self) -> int | None:
        """Time from sending to this receipt, from ``SentTimestamp``."""
        try:
            sent = int(self.attributes["SentTimestamp"])
        except (KeyError, ValueError):
            return None
        return max(0, self.received_at_ms - sent)

    @property
    def group(self) -> str | None:
        """Its fair-queue group (``MessageGroupId``), if it was sent in one."""
        return self.attributes.get(GROUP_ATTRIBUTE)

    def string_attribute(self, name: str) -> str | None:
        """A String message attribute's value, or ``None``."""
        value = self.message_attributes.get(name)
        if not isinstance(value, dict):
            return None
        text = value.get("StringValue")
        return text if isinstance(text, str) else None


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """The request queue's own settings."""

    visibility_timeout_s: int
    dlq_url: str | None
    max_receive_count: int | None


class RequestQueue:
    """The request queue at `url`, through an aioboto3 SQS client."""

    def __init__(self, sqs: SQSClient, url: str, clock: Clock) -> None:
        self.sqs = sqs
        self.url = url
        self._clock = clock

    async def describe(self) -> QueueInfo:
        """Read the visibility timeout and the redrive policy."""
        response = await self.sqs.get_queue_attributes(
            QueueUrl=self.url, AttributeNames=["VisibilityTimeout", "RedrivePolicy"]
        )
        attributes = response.get("Attributes", {})
        visibility = int(attributes.get("VisibilityTimeout", "30"))
        dlq_arn, max_receive_count = redrive_policy(attributes)
        dlq_url = await url_of_arn(self.sqs, dlq_arn) if dlq_arn else None
        return QueueInfo(visibility, dlq_url, max_receive_count)

    async def receive(
        self, max_messages: int, wait_s: int, visibility_s: int
    ) -> list[ReceivedMessage]:
        """Long-poll for up to `max_messages`, hiding them for `visibility_s`."""
        started = self._clock.monotonic()
        response = await self.sqs.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=max(1, min(max_messages, 10)),
            WaitTimeSeconds=wait_s,
            VisibilityTimeout=visibility_s,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=[
                "ApproximateReceiveCount",
                "SentTimestamp",
                GROUP_ATTRIBUTE,
            ],
        )
        returned = self._clock.monotonic()
        now_ms = epoch_ms(self._clock.now())
        return [
            ReceivedMessage(
                message_id=m["MessageId"],
                receipt_handle=m["ReceiptHandle"],
                body=m.get("Body", ""),
                attributes={str(k): v for k, v in m.get("Attributes", {}).items()},
                message_attributes=dict(m.get("MessageAttributes", {})),
                received_at=started,
                received_at_ms=now_ms,
                returned_at=returned,
            )
            for m in response.get("Messages", [])
        ]

    async def set_visibility(self, message: ReceivedMessage, seconds: int) -> None:
        """Hide `message` for `seconds` from now (0 releases it at once)."""
        await self.sqs.change_message_visibility(
            QueueUrl=self.url, ReceiptHandle=message.receipt_handle, VisibilityTimeout=seconds
        )

    async def delete(self, message: ReceivedMessage) -> None:
        """Remove `message` for good."""
        await self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message.receipt_handle)

    async def dead_letter(
        self, message: ReceivedMessage, dlq_url: str, code: str, error: str
    ) -> None:
        """Copy `message` to the dead-letter queue: body and attributes
        unchanged, plus ``error_code`` and ``error_message`` (within SQS's
        attribute limit, as the module says)."""
        attributes, dropped = dead_letter_attributes(message.message_attributes)
        text = error[:MAX_ERROR_MESSAGE] or code
        if dropped:
            text += f" (attributes dropped: {', '.join(dropped)})"
        attributes[ERROR_CODE_ATTRIBUTE] = {"DataType": "String", "StringValue": code}
        attributes[ERROR_MESSAGE_ATTRIBUTE] = {"DataType": "String", "StringValue": text}
        await self.send_copy(message, dlq_url, attributes)

    async def send_copy(
        self,
        message: ReceivedMessage,
        url: str,
        attributes: dict[str, MessageAttributeValueTypeDef],
        delay_s: int = 0,
    ) -> None:
        """Send `message`'s body to queue `url` with `attributes`, visible after
        `delay_s`, in the same fair-queue group (``MessageGroupId``) as the
        original, so a copy keeps its user's place in fair scheduling."""
        group = message.attributes.get(GROUP_ATTRIBUTE)
        if group:
            await self.sqs.send_message(
                QueueUrl=url,
                MessageBody=message.body,
                MessageAttributes=attributes,
                DelaySeconds=delay_s,
                MessageGroupId=group,
            )
        else:
            await self.sqs.send_message(
                QueueUrl=url,
                MessageBody=message.body,
                MessageAttributes=attributes,
                DelaySeconds=delay_s,
            )


def dead_letter_attributes(
    received: dict[str, Any],
) -> tuple[dict[str, MessageAttributeValueTypeDef], list[str]]:
    """The attributes a dead-letter copy carries over, and the names left out.

    Room is kept for ``error_code`` and ``error_message`` (a redriven copy's
    old ones are replaced); ``signature`` is kept first, then the others in
    name order until :data:`MAX_MESSAGE_ATTRIBUTES` is reached.
    """
    ours = (ERROR_CODE_ATTRIBUTE, ERROR_MESSAGE_ATTRIBUTE)
    copied = copyable_attributes(received, drop=(*ours, ATTEMPTS_ATTRIBUTE, DEATHS_ATTRIBUTE))
    room = MAX_MESSAGE_ATTRIBUTES - len(ours)
    names = [n for n in _ALWAYS_KEPT if n in copied]
    names += sorted(n for n in copied if n not in _ALWAYS_KEPT)
    kept, dropped = names[:room], sorted(names[room:])
    return {name: copied[name] for name in kept}, dropped
