"""The dead-letter queue seen from outside: peek at it, move it back, empty it.

Peeking never deletes: messages are hidden briefly while they are read (so
that more than one batch can be seen) and released again at the end; each
read still counts as a receive in SQS. A redrive sends each message to the
request queue before deleting it from the DLQ, so an interruption can
duplicate a request but never lose one; duplicates are harmless because the
consumer is idempotent by ``job_id``. A copy keeps the request's
``MessageGroupId``, so it stays in its user's fair-queue group.

A redrive ends by itself, even while consumers run and dead-letter again
what it moved (each time as a new message with a new id). Two rules bound it:

* a budget: it moves at most the number of messages the DLQ held when it
  began (visible plus in flight, as SQS counts them; with ``--max``, at most
  that many);
* a mark: every copy it sends carries the ``redrive_run`` attribute with the
  run's id. The consumer's dead-letter copy keeps a request's attributes, so
  a request that fails again during the run comes back marked, and the run
  leaves it on the DLQ. A later run moves it again (with its own mark).

The mark is the exact rule; the budget is the backstop where the mark cannot
be added (a request already carrying so many attributes that the consumer's
two error attributes would pass SQS's limit of 10) and against requests
dead-lettered by other traffic while the run goes on. Clocks are not
compared: the DLQ's timestamps come from SQS, the run's from this machine.
The move task (StartMessageMoveTask) is bounded by SQS itself: it counts the
messages to move when it starts.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from consumer.aws.queue_meta import ERROR_ATTRIBUTES, attributes_size, copyable_attributes
from consumer.aws.request_queue import GROUP_ATTRIBUTE
from consumer.cli.redrive_rules import NO_CODE, CodeRule
from consumer.contract.request import identifying_fields

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import MessageTypeDef, SendMessageBatchRequestEntryTypeDef

# Long enough to read a batch and act on it; released explicitly afterwards.
PEEK_HIDE_S = 30
REDRIVE_HIDE_S = 120
# One-second polls: short polls sample only some SQS hosts and can miss
# messages, while a long wait would slow down the end of every run.
POLL_WAIT_S = 1
SQS_BATCH = 10
# SendMessageBatch refuses batches whose messages total more than 256 KiB.
MAX_BATCH_BYTES = 256 * 1024
RUN_ATTRIBUTE = "redrive_run"
# SQS allows 10 attributes; a consumer adds two (error code and message) when
# it dead-letters, so the mark goes only where 7 or fewer remain.
MAX_ATTRIBUTES = 10
CONSUMER_ADDED_ATTRIBUTES = 2


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message waiting in the DLQ, as `illustrator dlq list` shows it."""

    message_id: str
    job_id: str | None
    kind: str | None
    user_id: str | None
    error_code: str | None
    error_message: str | None
    age_s: float | None
    receive_count: int

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "message_id": self.message_id,
            "job_id": self.job_id,
            "kind": self.kind,
            "user_id": self.user_id,
            "error_code": self.error_code,
            "error_message": self.error_message,
            "age_s": None if self.age_s is None else round(self.age_s, 3),
            "receive_count": self.receive_count,
        }


def _string_attribute(message: MessageTypeDef, name: str) -> str | None:
    value: Mapping[str, Any] = message.get("MessageAttributes", {}).get(name, {})
    text = value.get("StringValue")
    return text if isinstance(text, str) else None


def describe(message: MessageTypeDef, now_s: float) -> DeadLetter:
    """What a DLQ message is about, read from its body and attributes."""
    fields = identifying_fields(message.get("Body", "").encode("utf-8"))
    system = message.get("Attributes", {})
    sent_ms = system.get("SentTimestamp")
    age = max(0.0, now_s - int(sent_ms) / 1000) if sent_ms and sent_ms.isdigit() else None
    count = system.get("ApproximateReceiveCount", "0")
    return DeadLetter(
        message_id=message["MessageId"],
        job_id=fields.job_id,
        kind=fields.kind,
        user_id=fields.user_id,
        error_code=_string_attribute(message, "error_code"),
        error_message=_string_attribute(message, "error_message"),
        age_s=age,
        receive_count=int(count) if count.isdigit() else 0,
    )


async def _receive(sqs: SQSClient, url: str, count: int, hide_s: int) -> Sequence[MessageTypeDef]:
    response = await sqs.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=max(1, min(count, SQS_BATCH)),
        WaitTimeSeconds=POLL_WAIT_S,
        VisibilityTimeout=hide_s,
        MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["SentTimestamp", "ApproximateReceiveCount", GROUP_ATTRIBUTE],
    )
    return response.get("Messages", [])


async def release(sqs: SQSClient, url: str, receipts: Sequence[str]) -> None:
    """Make the messages behind `receipts` visible again at once."""
    for start in range(0, len(receipts), SQS_BATCH):
        chunk = receipts[start : start + SQS_BATCH]
        await sqs.change_message_visibility_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": 0}
                for i, r in enumerate(chunk)
            ],
        )


async def peek(
    sqs: SQSClient, url: str, limit: int, clock: Callable[[], float] = time.time
) -> list[DeadLetter]:
    """Up to `limit` DLQ messages, left on the queue (released before returning)."""
    found: dict[str, DeadLetter] = {}
    receipts: list[str] = []
    try:
        while len(found) < limit:
            batch = await _receive(sqs, url, limit - len(found), PEEK_HIDE_S)
            if not batch:
                break
            for message in batch:
                receipts.append(message["ReceiptHandle"])
                found.setdefault(message["MessageId"], describe(message, clock()))
    finally:
        # Also after Ctrl-C (one cancellation; the release's awaits still run).
        await release(sqs, url, receipts)
    return list(found.values())[:limit]


@dataclass(slots=True)
class RedriveReport:
    """What a redrive did. `failed` maps message ids to the reason they stayed,
    `left` the codes its rule left in the DLQ to how many."""

    method: str
    moved: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    not_deleted: int = 0
    left: dict[str, int] = field(default_factory=dict)
    # Copy runs only: the DLQ's size when the run began, and the messages
    # this run had already moved that were dead-lettered again meanwhile.
    budget: int | None = None
    failed_again: int = 0


def run_mark(message: MessageTypeDef) -> str | None:
    """The id of the redrive run that last sent `message`, if it carries one."""
    return _string_attribute(message, RUN_ATTRIBUTE)


def _entry(index: int, message: MessageTypeDef, run_id: str) -> SendMessageBatchRequestEntryTypeDef:
    entry: SendMessageBatchRequestEntryTypeDef = {
        "Id": str(index),
        "MessageBody": message.get("Body", ""),
    }
    attributes = copyable_attributes(
        message.get("MessageAttributes", {}), ERROR_ATTRIBUTES | {RUN_ATTRIBUTE}
    )
    if len(attributes) + 1 + CONSUMER_ADDED_ATTRIBUTES <= MAX_ATTRIBUTES:
        attributes[RUN_ATTRIBUTE] = {"DataType": "String", "StringValue": run_id}
    if attributes:
        entry["MessageAttributes"] = attributes
    # The user's fair-queue group travels with the request (contract: send
    # each request with MessageGroupId = user_id).
    group = message.get("Attributes", {}).get(GROUP_ATTRIBUTE)
    if group:
        entry["MessageGroupId"] = group
    return entry


def _entry_size(entry: SendMessageBatchRequestEntryTypeDef) -> int:
    return len(entry["MessageBody"].encode("utf-8")) + attributes_size(
        entry.get("MessageAttributes", {})
    )


def size_chunks(
    entries: Sequence[SendMessageBatchRequestEntryTypeDef], limit: int = MAX_BATCH_BYTES
) -> list[list[SendMessageBatchRequestEntryTypeDef]]:
    """Split `entries` into batches SendMessageBatch accepts (count and bytes)."""
    chunks: list[list[SendMessageBatchRequestEntryTypeDef]] = []
    current: list[SendMessageBatchRequestEntryTypeDef] = []
    size = 0
    for entry in entries:
        entry_size = _entry_size(entry)
        if current and (size + entry_size > limit or len(current) == SQS_BATCH):
            chunks.append(current)
            current, size = [], 0
        current.append(entry)
        size += entry_size
    if current:
        chunks.append(current)
    return chunks


async def dlq_size(sqs: SQSClient, url: str) -> int:
    """The messages on the queue, visible or in flight, as SQS counts them."""
    response = await sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    counts = response.get("Attributes", {})
    visible = int(counts.get("ApproximateNumberOfMessages", "0"))
    return visible + int(counts.get("ApproximateNumberOfMessagesNotVisible", "0"))


class CopyRedrive:
    """Send-then-delete redrive, batch by batch, for endpoints without move tasks.

    Every message received and not deleted is made visible again at the end,
    however the run ends, so an interrupted redrive leaves the rest on view.
    Only the messages `rule` moves are sent (all when ``None``); the others
    are counted by code and left. The run ends once it has dealt with its
    budget, or when a receive brings nothing it has not seen (see the
    module's notes).
    """

    def __init__(
        self,
        sqs: SQSClient,
        dlq_url: str,
        queue_url: str,
        progress: Callable[[RedriveReport], None] = lambda _: None,
        rule: CodeRule | None = None,
    ) -> None:
        self._sqs = sqs
        self._dlq_url = dlq_url
        self._queue_url = queue_url
        self._progress = progress
        self._rule = rule or CodeRule.everything()
        # Message id -> latest receipt handle, for everything not yet deleted.
        self._held: dict[str, str] = {}
        # Sent but not deleted, or refused by the request queue: not retried
        # in this run, or the loop could go round forever.
        self._skip: set[str] = set()
        self._seen: set[str] = set()
        self.run_id = uuid.uuid4().hex
        self.report = RedriveReport(method="copy")

    async def run(self, max_messages: int | None = None) -> RedriveReport:
        """Move up to `max_messages` (at most what the DLQ held at the start,
        when ``None``) and return the report.

        The messages moved and left together stay within the DLQ's size at
        the start; `max_messages` bounds those moved.
        """
        budget = await dlq_size(self._sqs, self._dlq_url)
        limit = budget if max_messages is None else min(budget, max_messages)
        self.report.budget = budget
        try:
            while self.report.moved < limit and self._dealt_with < budget:
                wanted = min(limit - self.report.moved, budget - self._dealt_with)
                batch = await _receive(self._sqs, self._dlq_url, wanted, REDRIVE_HIDE_S)
                self._held.update((m["MessageId"], m["ReceiptHandle"]) for m in batch)
                new = [m for m in batch if m["MessageId"] not in self._seen]
                if not new:
                    # Empty, or only messages seen before (their hiding ran out).
                    break
                self._seen.update(m["MessageId"] for m in new)
                ours = {m["MessageId"] for m in new if run_mark(m) == self.run_id}
                self.report.failed_again += len(ours)
                fresh = [m for m in new if m["MessageId"] not in self._skip | ours]
                chosen = self._choose(fresh)[: limit - self.report.moved]
                if chosen:
                    await self._move(chosen)
                    self._progress(self.report)
        finally:
            await release(self._sqs, self._dlq_url, list(self._held.values()))
        return self.report

    @property
    def _dealt_with(self) -> int:
        return self.report.moved + sum(self.report.left.values())

    def _choose(self, messages: Sequence[MessageTypeDef]) -> list[MessageTypeDef]:
        """The messages the rule moves; the others are counted and left."""
        chosen = []
        for message in messages:
            code = _string_attribute(message, "error_code")
            if self._rule.moves(code):
                chosen.append(message)
            else:
                name = code or NO_CODE
                self.report.left[name] = self.report.left.get(name, 0) + 1
        return chosen

    async def _move(self, messages: Sequence[MessageTypeDef]) -> None:
        by_id = {str(i): m for i, m in enumerate(messages)}
        entries = [_entry(i, m, self.run_id) for i, m in enumerate(messages)]
        for chunk in size_chunks(entries):
            response = await self._sqs.send_message_batch(QueueUrl=self._queue_url, Entries=chunk)
            for failure in response.get("Failed", []):
                message_id = by_id[failure["Id"]]["MessageId"]
                self.report.failed[message_id] = failure.get("Message", failure["Code"])
                self._skip.add(message_id)
            sent = [by_id[s["Id"]] for s in response.get("Successful", [])]
            await self._delete(sent)

    async def _delete(self, sent: Sequence[MessageTypeDef]) -> None:
        if not sent:
            return
        response = await self._sqs.delete_message_batch(
            QueueUrl=self._dlq_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(sent)
            ],
        )
        failed = {int(f["Id"]) for f in response.get("Failed", [])}
        for index, message in enumerate(sent):
            if index in failed:
                # Sent but still on the DLQ: a later redrive sends it again
                # (a duplicate, which the consumer absorbs), never a loss.
                self._skip.add(message["MessageId"])
            else:
                self._held.pop(message["MessageId"], None)
        self.report.not_deleted += len(failed)
        self.report.moved += len(sent)


async def purge(sqs: SQSClient, url: str) -> int:
    """Delete every message on the queue (SQS allows this once a minute).

    Returns how many it held just before, visible or in flight: SQS reports
    no count of its own, and finishes a purge within a minute.
    """
    count = await dlq_size(sqs, url)
    await sqs.purge_queue(QueueUrl=url)
    return count
