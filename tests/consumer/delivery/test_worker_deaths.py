"""A request's share in its workers' deaths: after MAX_WORKER_DEATHS it fails
as crashed_worker and no further worker is given it (contract 10.2)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from consumer.delivery.worker import EXIT_FATAL
from pipeline.api.errors import PipelineBrokenError
from tests.support.aws import Stack
from tests.support.helpers import Observer, eventually, memory, running, settings
from tests.support.recording import blank

POISON = "the GPU failed and cannot be used again: an illegal memory access"


def _peek(stack: Stack) -> list[dict[str, Any]]:
    """The visible requests with their attributes, left visible (one receive each)."""
    response = stack.client("sqs").receive_message(
        QueueUrl=stack.queue_url,
        MaxNumberOfMessages=10,
        VisibilityTimeout=0,
        MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["All"],
    )
    return list(response.get("Messages", []))


def _attribute(message: dict[str, Any], name: str) -> str | None:
    value = message.get("MessageAttributes", {}).get(name)
    return None if value is None else str(value["StringValue"])


def _vanish(stack: Stack, times: int) -> None:
    """Receive the request `times` times without a word, as workers killed
    with it (SIGKILL, a lost host) would."""
    sqs = stack.client("sqs")
    for _ in range(times):
        got = sqs.receive_message(QueueUrl=stack.queue_url, VisibilityTimeout=0)
        assert len(got.get("Messages", [])) == 1


async def test_a_request_that_kills_its_workers_fails_after_two_deaths(stack: Stack) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    first = blank(failures=[PipelineBrokenError(POISON)])
    async with running(first) as handle:
        stack.send(memory("poison-1"), attributes={"trace": "t-1"})
        assert await handle.task == EXIT_FATAL
    # Handed on at once as a fresh copy charged the death; no event yet.
    (copy,) = _peek(stack)
    assert _attribute(copy, "worker_deaths") == "1"
    assert _attribute(copy, "failed_attempts") == "0"  # a death is no failed attempt
    assert _attribute(copy, "trace") == "t-1"
    assert await observer.settle(0.3) == []

    second = blank(failures=[PipelineBrokenError(POISON)])
    async with running(second) as handle:
        assert await handle.task == EXIT_FATAL  # the worker still stops
    (event,) = await observer.wait(1)
    assert event["status"] == "failed"
    assert event["error"]["code"] == "crashed_worker"
    assert event["error"]["retryable"] is False
    assert "2 workers died" in event["error"]["message"]
    assert "MAX_WORKER_DEATHS is 2" in event["error"]["message"]
    assert POISON in event["error"]["message"]
    assert event["job_id"] == "poison-1"
    (dead,) = stack.receive_all(stack.dlq_url)
    assert dead["MessageAttributes"]["error_code"]["StringValue"] == "crashed_worker"
    # A redriven request starts afresh: the counts stay behind.
    assert "worker_deaths" not in dead["MessageAttributes"]
    assert _attribute(dead, "trace") == "t-1"
    assert stack.queue_counts() == (0, 0)
    assert [len(first.calls), len(second.calls)] == [1, 1]


async def test_only_the_request_on_the_gpu_is_charged(stack: Stack) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    generator = blank(failures=[PipelineBrokenError(POISON)], latency_ms=200)
    async with running(generator) as handle:
        stack.send(memory("job-1", seed=1))
        stack.send(memory("job-2", seed=2))
        await eventually(lambda: stack.queue_counts() == (0, 2), what="both taken")
        assert await handle.task == EXIT_FATAL
    poisoned = f"job-{generator.calls[0].seed}"
    other = "job-2" if poisoned == "job-1" else "job-1"
    # The other one was either drawn before the worker stopped, or given back
    # at no cost.
    events = {e["job_id"]: e for e in await observer.settle(0.5)}
    copies = {json.loads(m["Body"])["job_id"]: m for m in _peek(stack)}
    assert _attribute(copies[poisoned], "worker_deaths") == "1"
    assert poisoned not in events
    if other in copies:
        assert _attribute(copies[other], "worker_deaths") is None
    else:
        assert events[other]["status"] == "succeeded"


async def test_a_timeout_within_budget_is_the_worker_s_death_not_a_failed_attempt(
    stack: Stack,
) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    config = settings(generation_timeout_s=0.3)
    codes = []
    for _ in range(2):
        generator = blank(latency_ms=60_000)
        async with running(generator, config) as handle:
            if not codes:
                stack.send(memory("slow-1"))
            codes.append(await handle.task)
        # Stopped at its deadline, at its next step.
        (stop,) = generator.stops
        assert stop is not None
        assert stop.is_set()
        assert all(end - start < 5 for start, end in generator.spans)
    assert codes == [EXIT_FATAL, EXIT_FATAL]
    (event,) = await observer.wait(1)
    assert event["error"]["code"] == "crashed_worker"
    assert "ran past its deadline of 0.3 s" in event["error"]["message"]
    assert event["attempts"] == 1
    assert stack.outputs() == []


async def _one_run(stack: Stack, make: Callable[[], None]) -> tuple[dict[str, Any], int]:
    observer = Observer(stack)
    generator = blank()
    async with running(generator):
        make()
        (event,) = await observer.wait(1, within=20)
        await eventually(lambda: stack.queue_counts() == (0, 0), what="the request settled")
    return event, len(generator.calls)


async def test_three_silent_ends_are_a_death_recorded_on_a_fresh_copy(
    make_env_stack: Callable[..., Stack],
) -> None:
    # The queue's own safety net well above: the service must decide first.
    stack = make_env_stack(max_receive_count=10)
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    stack.send(memory("vanished-3"))
    _vanish(stack, 3)
    # Receive 4: three ended without a word, one beyond the allowance: a
    # death, recorded on a fresh copy (not drawn); that copy's worker then dies
    # too, which is the second death.
    generator = blank(failures=[PipelineBrokenError(POISON)])
    async with running(generator) as handle:
        assert await handle.task == EXIT_FATAL
    (event,) = await observer.wait(1)
    assert event["error"]["code"] == "crashed_worker"
    assert "2 workers died" in event["error"]["message"]
    assert event["attempts"] == 1  # deaths are no failed attempts
    assert len(generator.calls) == 1


async def test_a_silent_death_is_recorded_before_the_request_is_drawn(
    make_env_stack: Callable[..., Stack],
) -> None:
    stack = make_env_stack(max_receive_count=10)
    stack.put_input("avatars/user1.png")
    sent: list[str] = []

    def three_silent_ends() -> None:
        sent.append(stack.send(memory("recorded-3")))
        _vanish(stack, 3)

    event, drawn = await _one_run(stack, three_silent_ends)
    assert event["status"] == "succeeded"
    assert event["attempts"] == 1
    # Drawn from the fresh copy that records the death, its receive count anew.
    assert event["sqs_message_id"] != sent[0]
    assert drawn == 1


async def test_a_copy_that_was_never_re_sent_counts_a_death_for_every_three(
    make_env_stack: Callable[..., Stack],
) -> None:
    stack = make_env_stack(max_receive_count=10)
    stack.put_input("avatars/user1.png")

    def six_silent_ends() -> None:
        stack.send(memory("vanished-6"))
        _vanish(stack, 6)

    event, drawn = await _one_run(stack, six_silent_ends)
    assert event["error"]["code"] == "crashed_worker"
    assert "2 workers died" in event["error"]["message"]
    assert drawn == 0
    (dead,) = stack.receive_all(stack.dlq_url)
    assert dead["MessageAttributes"]["error_code"]["StringValue"] == "crashed_worker"


async def test_silent_ends_within_the_allowance_cost_nothing(
    make_env_stack: Callable[..., Stack],
) -> None:
    stack = make_env_stack(max_receive_count=10)
    stack.put_input("avatars/user1.png")

    def two_silent_ends() -> None:
        stack.send(memory("vanished-2"))
        _vanish(stack, 2)

    event, drawn = await _one_run(stack, two_silent_ends)
    assert event["status"] == "succeeded"
    assert event["attempts"] == 1
    assert drawn == 1


async def test_a_reported_death_and_a_silent_one_add_up(
    make_env_stack: Callable[..., Stack],
) -> None:
    stack = make_env_stack(max_receive_count=10)
    stack.put_input("avatars/user1.png")

    def charged_once_then_vanished() -> None:
        sqs = stack.client("sqs")
        sqs.send_message(
            QueueUrl=stack.queue_url,
            MessageBody=json.dumps(memory("mixed-1")),
            MessageAttributes={"worker_deaths": {"DataType": "Number", "StringValue": "1"}},
        )
        _vanish(stack, 3)

    event, drawn = await _one_run(stack, charged_once_then_vanished)
    assert event["error"]["code"] == "crashed_worker"
    assert drawn == 0


async def test_max_worker_deaths_is_a_setting(stack: Stack) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    generator = blank(failures=[PipelineBrokenError(POISON)])
    async with running(generator, settings(max_worker_deaths=1)) as handle:
        stack.send(memory("poison-once"))
        assert await handle.task == EXIT_FATAL
    (event,) = await observer.wait(1)
    assert event["error"]["code"] == "crashed_worker"
    assert "when 1 worker died" in event["error"]["message"]
