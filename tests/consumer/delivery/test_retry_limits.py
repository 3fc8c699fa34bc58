"""Retries as the contract says: hidden for the backoff, ended by the queue's receive count."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from consumer.aws.request_queue import ReceivedMessage, RequestQueue
from pipeline.api.errors import GenerationOOMError
from tests.support.aws import Stack
from tests.support.helpers import (
    Observer,
    eventually,
    memory,
    put_input,
    queue_counts,
    running,
    send,
    settings,
)
from tests.support.recording import blank


async def test_a_retry_hides_the_request_for_the_backoff(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    put_input(stack, "avatars/user1.png")
    changes: list[tuple[str, int]] = []
    real = RequestQueue.set_visibility

    async def spy(self: RequestQueue, message: ReceivedMessage, seconds: int) -> None:
        changes.append((message.message_id, seconds))
        await real(self, message, seconds)

    monkeypatch.setattr(RequestQueue, "set_visibility", spy)
    generator = blank(failures=[GenerationOOMError("out of memory once")])
    config = settings(retry_backoff_base_s=7, retry_backoff_max_s=900)
    async with running(generator, config):
        message_id = send(stack, memory("backoff-1"))
        await eventually(lambda: (message_id, 7) in changes, what="the backoff")
        # The last word on its visibility was the backoff: it stays hidden.
        assert [s for m, s in changes if m == message_id][-1] == 7
        assert queue_counts(stack) == (0, 1)


async def test_the_queues_receive_count_ends_the_retries(
    make_env_stack: Callable[..., Stack],
) -> None:
    stack = make_env_stack(max_receive_count=2)
    put_input(stack, "avatars/user1.png")
    observer = Observer(stack)
    generator = blank(failures=[GenerationOOMError("oom")] * 3)
    # No MAX_ATTEMPTS: the RedrivePolicy's maxReceiveCount (2) is the limit.
    async with running(generator, settings()):
        send(stack, memory("limit-1"))
        (event,) = await observer.wait(1, within=20)
    assert event["status"] == "failed"
    assert event["attempts"] == 2
    assert event["error"]["retryable"] is True
    assert len(generator.calls) == 2
