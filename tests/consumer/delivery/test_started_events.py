"""Started events (contract 8.4): published as a generation begins, only when asked."""

from __future__ import annotations

from tests.support.aws import Stack
from tests.support.helpers import Observer, memory, running, settings
from tests.support.recording import blank


async def test_a_started_event_comes_before_the_completion(stack: Stack) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    generator = blank()
    async with running(generator, settings(publish_started_events=True)) as worker:
        message_id = stack.send(memory("m-s"))
        events = await observer.wait(2)
        assert worker.worker.metrics.started_events._value.get() == 1
    started, finished = events
    assert started == {
        "version": 1,
        "status": "started",
        "job_id": "m-s",
        "kind": "memory",
        "user_id": "user1",
        "sqs_message_id": message_id,
        "attempts": 1,
        "worker_id": "test-worker",
        "started_at": started["started_at"],
    }
    assert started["started_at"] <= finished["finished_at"]
    assert observer.attributes[0] == {"status": "started", "kind": "memory"}
    assert finished["status"] == "succeeded"


async def test_no_started_event_by_default_or_for_a_job_that_never_generates(
    stack: Stack,
) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    async with running(blank()):
        stack.send(memory("m-default"))
        await observer.wait(1)
    async with running(blank(), settings(publish_started_events=True)):
        stack.send({"job_id": "bad", "kind": "memory"})  # invalid: never generates
        await observer.wait(2)
        events = await observer.settle()
    assert [e["status"] for e in events] == ["succeeded", "failed"]
