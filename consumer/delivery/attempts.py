"""Attempts and worker deaths, counted by the request itself.

SQS's ``ApproximateReceiveCount`` grows on every receive, whatever ended it:
a failure, but also a drain, a stop, a scale-in or an outage. Counting
attempts from it would charge the request for the worker's troubles, and the
queue's RedrivePolicy would dead-letter a request silently once it had been
released ``maxReceiveCount`` times. So the counts live in the message:

* A failure of the request that is to be retried sends a **fresh copy** of
  the request (same body, same attributes, plus ``failed_attempts`` = the
  failures so far), delayed by the retry backoff, and deletes the received
  one. The copy starts with a receive count of 1.
* A release (drain, stop, scale-in, outage, an input not fetchable while S3
  is out) costs nothing: a first delivery is made visible again, a later one
  is replaced by a fresh copy with no failure added and no delay, so the
  receive count stays at most :data:`RESEND_RELEASE_AT` from releases and the
  RedrivePolicy never sees them.
* A worker that dies with the request on its GPU (a fatal error) hands it on
  as a fresh copy carrying ``worker_deaths`` + 1, or dead-letters it as
  ``crashed_worker`` at the last death allowed. Workers that vanish without a
  word (SIGKILL, a lost host) leave their mark in the receive count, which
  :func:`consumer.delivery.retry_policy.charged_deaths` reads: a copy whose
  receive count proves a death is re-sent at once with it recorded (and not
  drawn this time), and every copy sent carries the deaths so charged, so
  none is forgotten when the receive count starts again. A request charged
  ``MAX_WORKER_DEATHS`` is failed once it is known to be neither finished
  (its outputs all written) nor cancelled, before its input is read or
  anything is drawn.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

from consumer.aws.queue_meta import copyable_attributes
from consumer.aws.request_queue import (
    ATTEMPTS_ATTRIBUTE,
    DEATHS_ATTRIBUTE,
    MAX_MESSAGE_ATTRIBUTES,
    ReceivedMessage,
    RequestQueue,
)
from consumer.classify import Classification, classify
from consumer.contract.signing import SIGNATURE_ATTRIBUTE
from consumer.delivery.heartbeat import Heartbeat
from consumer.delivery.retry_policy import RetryLimits, charged_deaths, silent_deaths
from consumer.errors import CrashedWorker, ErrorCode, Severity, TransientError

if TYPE_CHECKING:
    from types_aiobotocore_sqs.type_defs import MessageAttributeValueTypeDef

log = structlog.get_logger(__name__)

# The longest one release call may take: with AWS unreachable, botocore's
# retries would hold a drain far longer than a release is worth.
RELEASE_TIMEOUT_S = 5.0
# How long a dying worker tries to send the copy that records its death.
HAND_ON_WITHIN_S = 60.0
# Releases of a request received this often send a fresh copy.
RESEND_RELEASE_AT = 2
# SQS's longest DelaySeconds.
MAX_DELAY_S = 900
# A count beyond any sane MAX_ATTEMPTS is not trusted as sent.
MAX_COUNTED = 1000


def _count(message: ReceivedMessage, name: str) -> int:
    text = message.string_attribute(name)
    try:
        return min(MAX_COUNTED, max(0, int(str(text))))
    except ValueError:
        return 0


def failures(message: ReceivedMessage) -> int:
    """The failures of this request before this delivery (0 for a new one)."""
    return _count(message, ATTEMPTS_ATTRIBUTE)


def deaths(message: ReceivedMessage) -> int:
    """The worker deaths this request is charged with: those its copy
    carries and those its receive count shows."""
    return charged_deaths(_count(message, DEATHS_ATTRIBUTE), message.receive_count)


def attempt(message: ReceivedMessage) -> int:
    """This delivery's attempt number: 1 plus the failures before it."""
    return failures(message) + 1


class DeathsToRecord(TransientError):
    """The receive count proves a silent death: release the request, and the
    fresh copy its release sends records it (no attempt is used)."""


def check_deaths(message: ReceivedMessage, max_deaths: int) -> None:
    """Raise :class:`CrashedWorker` for a request charged `max_deaths` worker
    deaths, or :class:`DeathsToRecord` when its receive count proves some."""
    if (charged := deaths(message)) >= max_deaths:
        raise CrashedWorker(crashed_message(charged, max_deaths, "workers vanished with it"))
    if silent_deaths(message.receive_count):
        raise DeathsToRecord(
            f"taken {message.receive_count} times without a word: charged {charged} "
            "worker death(s), recorded on a fresh copy"
        )


def crashed_message(charged: int, max_deaths: int, last: str) -> str:
    """What a ``crashed_worker`` failure says: the deaths, the limit, the last cause."""
    return (
        f"the request was in flight when {charged} worker{'' if charged == 1 else 's'} died "
        f"(MAX_WORKER_DEATHS is {max_deaths}; the last: {last}); "
        "it is not handed to another worker"
    )


def crashed(charged: int, limits: RetryLimits, last: Classification) -> Classification:
    """The ``crashed_worker`` failure of a request whose `charged`-th worker
    death, the last allowed, was `last` (a fatal failure)."""
    message = crashed_message(charged, limits.max_worker_deaths, last.message)
    return Classification(Severity.PERMANENT, ErrorCode.CRASHED_WORKER, message, last.log_level)


def copy_attributes(
    message: ReceivedMessage, failed: int, died: int = 0
) -> dict[str, MessageAttributeValueTypeDef]:
    """The re-sent copy's attributes: the received ones with the counts set.

    Within SQS's limit of 10: the counts and ``signature`` first, then the
    others by name (a request arrives with at most 10, of which the counts may
    be two, so at most two of the producer's would go). ``worker_deaths`` is
    written only when there are any.
    """
    ours = {ATTEMPTS_ATTRIBUTE: failed} | ({DEATHS_ATTRIBUTE: died} if died else {})
    copied = copyable_attributes(
        message.message_attributes, drop=(ATTEMPTS_ATTRIBUTE, DEATHS_ATTRIBUTE)
    )
    names = [n for n in (SIGNATURE_ATTRIBUTE,) if n in copied]
    names += sorted(n for n in copied if n != SIGNATURE_ATTRIBUTE)
    kept = {name: copied[name] for name in names[: MAX_MESSAGE_ATTRIBUTES - len(ours)]}
    for name, count in ours.items():
        kept[name] = {"DataType": "Number", "StringValue": str(count)}
    return kept


async def resend(
    queue: RequestQueue,
    message: ReceivedMessage,
    failed: int,
    delay_s: float = 0,
) -> None:
    """Replace `message` by a fresh copy carrying `failed` failures and the
    worker deaths it is charged with (:func:`deaths`), visible after
    `delay_s` (at most 900 s, SQS's limit), in the original's fair-queue group.

    The copy is sent before the received one is deleted: if the delete fails
    the request exists twice, which its job id makes harmless; the other way
    round it could be lost.
    """
    delay = max(0, min(MAX_DELAY_S, int(delay_s)))
    attributes = copy_attributes(message, failed, deaths(message))
    await queue.send_copy(message, queue.url, attributes, delay)
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


async def hand_on(
    heartbeat: Heartbeat,
    queue: RequestQueue,
    message: ReceivedMessage,
    died: int,
    within_s: float = HAND_ON_WITHIN_S,
) -> None:
    """Give `message` back at once as a fresh copy charged `died` worker
    deaths: its worker is dying with it. Never raises but on cancellation.

    The copy is what records the death, so it is tried for `within_s`
    (through a short SQS outage), the request kept hidden meanwhile; only
    then is the received one deleted. When no copy could be sent, the request
    is made visible again (or comes back after its visibility timeout), and
    its receive count tells of the death.
    """
    log.warning("job_handed_on", worker_deaths=died)
    attributes = copy_attributes(message, failures(message), died)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        try:
            send = queue.send_copy(message, queue.url, attributes)
            await asyncio.wait_for(send, RELEASE_TIMEOUT_S)
            break
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if loop.time() + 1.0 > deadline:
                log.warning("hand_on_failed", error=classify(error).message)
                await release(heartbeat, queue, message)
                return
        await asyncio.sleep(1.0)
    await heartbeat.release(message)
    try:
        await asyncio.wait_for(queue.delete(message), RELEASE_TIMEOUT_S)
    except asyncio.CancelledError:
        raise
    except Exception as error:  # it comes back after its visibility timeout: a duplicate
        log.warning("handed_on_not_deleted", error=classify(error).message)


async def delete(heartbeat: Heartbeat, queue: RequestQueue, message: ReceivedMessage) -> None:
    """Delete `message` for good; if that fails, keep it hidden again (the
    caller may wait for SQS and try again)."""
    await heartbeat.release(message)
    try:
        await queue.delete(message)
    except Exception:
        heartbeat.track(message)
        raise
