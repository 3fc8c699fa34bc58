"""Attempts that count failures of the request, carried by the request itself.

SQS's ``ApproximateReceiveCount`` grows on every receive, whatever ended it:
a failure, but also a drain, a stop, a scale-in or an outage. Counting
attempts from it would charge the request for the worker's troubles, and the
queue's RedrivePolicy would dead-letter a request silently once it had been
released ``maxReceiveCount`` times. So the count lives in the message:

* A failure of the request that is to be retried sends a **fresh copy** of
  the request (same body, same attributes, plus ``failed_attempts`` = the
  failures so far), delayed by the retry backoff, and deletes the received
  one. The copy starts with a receive count of 1.
* A release (drain, stop, scale-in, outage, an input not fetchable while S3
  is out) costs nothing: a first delivery is made visible again, a later one
  is replaced by a fresh copy with no failure added and no delay, so the
  receive count stays at most :data:`RESEND_RELEASE_AT` from releases and the
  RedrivePolicy never sees them.
* A receive count of :data:`ABANDONED_RECEIVES` means the request was taken
  that many times and never released nor failed: its workers vanished
  (SIGKILL, a lost host) or a cancelled long poll swallowed it. That costs one
  attempt, and the request goes on as a fresh copy; so a request that keeps
  killing its workers reaches ``MAX_ATTEMPTS`` (and the DLQ, with its failed
  event) long before the queue's safety net.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

from consumer.aws.queue_meta import copyable_attributes
from consumer.aws.request_queue import (
    ATTEMPTS_ATTRIBUTE,
    MAX_MESSAGE_ATTRIBUTES,
    ReceivedMessage,
    RequestQueue,
)
from consumer.classify import classify
from consumer.contract.signing import SIGNATURE_ATTRIBUTE
from consumer.delivery.heartbeat import Heartbeat
from consumer.errors import TransientError

if TYPE_CHECKING:
    from types_aiobotocore_sqs.type_defs import MessageAttributeValueTypeDef

log = structlog.get_logger(__name__)

# The longest one release call may take: with AWS unreachable, botocore's
# retries would hold a drain far longer than a release is worth.
RELEASE_TIMEOUT_S = 5.0
# Releases of a request received this often send a fresh copy.
RESEND_RELEASE_AT = 2
# Receives without an outcome that cost one attempt (well under the
# template's maxReceiveCount of 10).
ABANDONED_RECEIVES = 4
# SQS's longest DelaySeconds.
MAX_DELAY_S = 900
# A count beyond any sane MAX_ATTEMPTS is not trusted as sent.
MAX_COUNTED = 1000


def failures(message: ReceivedMessage) -> int:
    """The failures of this request before this delivery (0 for a new one)."""
    text = message.string_attribute(ATTEMPTS_ATTRIBUTE)
    try:
        return min(MAX_COUNTED, max(0, int(str(text))))
    except ValueError:
        return 0


def attempt(message: ReceivedMessage) -> int:
    """This delivery's attempt number: 1 plus the failures before it."""
    return failures(message) + 1


def abandoned(message: ReceivedMessage) -> bool:
    """Whether the request was received too often without any outcome."""
    return message.receive_count >= ABANDONED_RECEIVES


def check_abandoned(message: ReceivedMessage) -> None:
    """Raise a transient failure (one attempt) for an abandoned request."""
    if abandoned(message):
        raise TransientError(
            f"the request was taken {message.receive_count} times without an outcome"
            " (the workers that took it stopped)"
        )


def copy_attributes(
    message: ReceivedMessage, failed: int
) -> dict[str, MessageAttributeValueTypeDef]:
    """The re-sent copy's attributes: the received ones with the count set.

    Within SQS's limit of 10: the count and ``signature`` first, then the
    others by name (a request arrives with at most 10, of which the count may
    be one, so at most one of the producer's would go).
    """
    copied = copyable_attributes(message.message_attributes, drop=(ATTEMPTS_ATTRIBUTE,))
    names = [n for n in (SIGNATURE_ATTRIBUTE,) if n in copied]
    names += sorted(n for n in copied if n != SIGNATURE_ATTRIBUTE)
    kept = {name: copied[name] for name in names[: MAX_MESSAGE_ATTRIBUTES - 1]}
    kept[ATTEMPTS_ATTRIBUTE] = {"DataType": "Number", "StringValue": str(failed)}
    return kept


async def resend(
    queue: RequestQueue, message: ReceivedMessage, failed: int, delay_s: float = 0
) -> None:
    """Replace `message` by a fresh copy carrying `failed` failures, visible
    after `delay_s` (at most 900 s, SQS's limit), in the original's fair-queue group.

    The copy is sent before the received one is deleted: if the delete fails
    the request exists twice, which its job id makes harmless; the other way
    round it could be lost.
    """
    delay = max(0, min(MAX_DELAY_S, int(delay_s)))
    await queue.send_copy(message, queue.url, copy_attributes(message, failed), delay)
    await queue.delete(message)


async def release(heartbeat: Heartbeat, queue: RequestQueue, message: ReceivedMessage) -> None:
    """Stop keeping `message` hidden and give it back at no cost.

    A first delivery is made visible again (visibility 0): the same
    message, now received once. A later one is replaced by a fresh copy
    carrying the same failure count, so releases never bring the request
    nearer the queue's RedrivePolicy. (A first release does not re-send
    because a fresh message wakes any long poll still open on the queue, a
    cancelled one included, which would hide it for a receive hold.) When the
    copy cannot be sent (SQS is out), visibility 0, and when that fails too it
    comes back after its visibility timeout. Never raises but on cancellation.
    """
    await heartbeat.release(message)
    if message.receive_count >= RESEND_RELEASE_AT:
        try:
            await asyncio.wait_for(resend(queue, message, failures(message)), RELEASE_TIMEOUT_S)
            return
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning("release_copy_failed", error=classify(error).message)
    try:
        await asyncio.wait_for(queue.set_visibility(message, 0), RELEASE_TIMEOUT_S)
    except asyncio.CancelledError:
        raise
    except Exception as error:  # it comes back after its visibility timeout anyway
        log.warning("release_failed", error=classify(error).message)


async def delete(heartbeat: Heartbeat, queue: RequestQueue, message: ReceivedMessage) -> None:
    """Delete `message` for good; if that fails, keep it hidden again (the
    caller may wait for SQS and try again)."""
    await heartbeat.release(message)
    try:
        await queue.delete(message)
    except Exception:
        heartbeat.track(message)
        raise
