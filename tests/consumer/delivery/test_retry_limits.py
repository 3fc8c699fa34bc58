"""Retries as the contract says: a fresh copy after the backoff, ended by MAX_ATTEMPTS."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from consumer.aws.request_queue import ReceivedMessage, RequestQueue
from consumer.delivery import attempts
from pipeline.api.errors import GenerationOOMError
from tests.support.aws import Stack
from tests.support.helpers import Observer, eventually, memory, running, settings
from tests.support.recording import blank


async def test_a_retry_is_a_fresh_copy_delayed_by_the_backoff(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack.put_input("avatars/user1.png")
    copies: list[tuple[str, int, float]] = []
    real = attempts.resend

    async def spy(
        queue: RequestQueue, message: ReceivedMessage, failed: int, delay_s: float = 0
    ) -> None:
        copies.append((message.message_id, failed, delay_s))
        await real(queue, message, failed, delay_s)

    monkeypatch.setattr(attempts, "resend", spy)
    generator = blank(failures=[GenerationOOMError("out of memory once")])
    config = settings(retry_backoff_base_s=7, retry_backoff_max_s=900)
    async with running(generator, config):
        message_id = stack.send(memory("backoff-1"))
        await eventually(lambda: copies, what="the retry")
        assert copies == [(message_id, 1, 7)]
        # The received one is gone; the copy waits out its delay. (Whether a
        # delayed message also counts as not visible differs between moto
        # versions, so the copy is counted as delayed and nothing else.)
        await eventually(lambda: _delayed(stack) == 1, what="the delayed copy")
        visible, in_flight = stack.queue_counts()
        assert visible == 0
        assert in_flight <= _delayed(stack)  # at most the delayed copy itself


async def test_max_attempts_not_the_receive_count_ends_the_retries(
    make_env_stack: Callable[..., Stack],
) -> None:
    # A RedrivePolicy of 2 receives: the re-sent copies never reach it, so
    # the third attempt is the service's, with its failed event and DLQ copy.
    stack = make_env_stack(max_receive_count=2)
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    generator = blank(failures=[GenerationOOMError("oom")] * 3)
    async with running(generator, settings(retry_backoff_base_s=0, retry_backoff_max_s=0)):
        stack.send(memory("limit-1"))
        (event,) = await observer.wait(1, within=30)
    assert event["status"] == "failed"
    assert event["attempts"] == 3
    assert event["error"]["retryable"] is True
    assert len(generator.calls) == 3
    (dead,) = stack.client("sqs").receive_message(
        QueueUrl=stack.dlq_url, MessageAttributeNames=["All"]
    )["Messages"]
    assert dead["MessageAttributes"]["error_code"]["StringValue"] == "generation_failed"


def _delayed(stack: Stack) -> int:
    attributes = stack.client("sqs").get_queue_attributes(
        QueueUrl=stack.queue_url, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessagesDelayed"])


async def test_a_retry_copy_keeps_the_users_fair_queue_group(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fair queues schedule by MessageGroupId: a retried request that lost it
    # would fall out of its user's share of the queue.
    stack.put_input("avatars/user1.png")
    sent: list[str] = []
    real = attempts.resend

    async def spy(
        queue: RequestQueue, message: ReceivedMessage, failed: int, delay_s: float = 0
    ) -> None:
        await real(queue, message, failed, delay_s)
        sent.append(message.message_id)

    monkeypatch.setattr(attempts, "resend", spy)
    generator = blank(failures=[GenerationOOMError("out of memory once")])
    sqs = stack.client("sqs")
    # A backoff long enough that the worker is gone before the copy shows.
    async with running(generator, settings(retry_backoff_base_s=3, retry_backoff_max_s=3)):
        first = sqs.send_message(
            QueueUrl=stack.queue_url,
            MessageBody=json.dumps(memory("group-1")),
            MessageGroupId="user1",
        )["MessageId"]
        await eventually(lambda: sent, what="the retry copy")
    (copy,) = sqs.receive_message(
        QueueUrl=stack.queue_url,
        WaitTimeSeconds=10,
        MessageSystemAttributeNames=["MessageGroupId"],
        MessageAttributeNames=["All"],
    )["Messages"]
    assert sent == [first]
    assert copy["MessageId"] != first
    assert copy["Attributes"]["MessageGroupId"] == "user1"
