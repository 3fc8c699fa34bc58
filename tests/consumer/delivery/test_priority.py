"""The priority queue (contract 8.3): its requests start before waiting ones."""

from __future__ import annotations

import json
import threading

from tests.support.aws import Stack
from tests.support.helpers import Observer, eventually, memory, running, settings
from tests.support.recording import blank


def _priority_queue(stack: Stack) -> tuple[str, str]:
    """A priority queue with a dead-letter queue of its own."""
    sqs = stack.client("sqs")
    name = stack.queue_url.rsplit("/", 1)[1]
    dlq = sqs.create_queue(QueueName=f"{name}-priority-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"})
    url = sqs.create_queue(
        QueueName=f"{name}-priority",
        Attributes={"VisibilityTimeout": "30", "RedrivePolicy": policy},
    )["QueueUrl"]
    return url, dlq


def _send_to(stack: Stack, url: str, body: dict[str, object] | str) -> None:
    text = body if isinstance(body, str) else json.dumps(body)
    stack.client("sqs").send_message(QueueUrl=url, MessageBody=text)


async def test_a_priority_request_is_taken_next_ahead_of_the_backlog(stack: Stack) -> None:
    stack.put_input("avatars/user1.png")
    priority_url, _ = _priority_queue(stack)
    gate = threading.Event()
    generator = blank(gate=gate)
    observer = Observer(stack)
    for seed in (1, 2, 3, 4):
        stack.send(memory(f"n{seed}", seed=seed))
    config = settings(sqs_priority_queue_url=priority_url)
    async with running(generator, config):
        # One request on the GPU (held), one prefetched, two waiting.
        await eventually(generator.started.is_set, what="the first generation")
        await eventually(lambda: stack.queue_counts() == (2, 2), what="two taken, two waiting")
        _send_to(stack, priority_url, memory("p", seed=100))
        gate.set()
        await observer.wait(5, within=30)
    order = [spec.seed for spec in generator.calls]
    # The priority request waits only for the two the worker had already
    # taken (a standard queue keeps no order within a receive).
    assert sorted(order[:2]) == [1, 2]
    assert order[2] == 100
    assert sorted(order[3:]) == [3, 4]


async def test_a_failed_priority_request_goes_to_its_own_dead_letter_queue(
    stack: Stack,
) -> None:
    priority_url, priority_dlq = _priority_queue(stack)
    observer = Observer(stack)
    async with running(blank(), settings(sqs_priority_queue_url=priority_url)):
        _send_to(stack, priority_url, "not json")
        (event,) = await observer.wait(1)
        await eventually(
            lambda: stack.queue_counts(priority_url) == (0, 0), what="the request removed"
        )
    assert event["error"]["code"] == "invalid_request"
    assert [m["Body"] for m in stack.receive_all(priority_dlq)] == ["not json"]
    assert stack.receive_all(stack.dlq_url) == []


async def _flood(stack: Stack, share: float) -> list[str]:
    """Where each request a worker drew came from ("p" or "n"), in order, when
    40 priority and 20 ordinary requests wait from the start."""
    stack.put_input("avatars/user1.png")
    priority_url, _ = _priority_queue(stack)
    sqs = stack.client("sqs")
    for url, first in ((priority_url, 1000), (stack.queue_url, 0)):
        count = 40 if first else 20
        for start in range(0, count, 10):
            entries = [
                {"Id": str(n), "MessageBody": json.dumps(memory(f"j{first + n}", seed=first + n))}
                for n in range(start, start + 10)
            ]
            sqs.send_message_batch(QueueUrl=url, Entries=entries)
    generator = blank()
    observer = Observer(stack)
    config = settings(sqs_priority_queue_url=priority_url, priority_share=share)
    async with running(generator, config):
        await observer.wait(60, within=120)
    return ["p" if spec.seed >= 1000 else "n" for spec in generator.calls]


def _normal_share_during_the_flood(order: list[str]) -> float:
    """The request queue's share of the jobs drawn while priority requests waited."""
    flood = order[: len(order) - order[::-1].index("p")]
    return flood.count("n") / len(flood)


async def test_a_priority_flood_leaves_the_request_queue_its_share(stack: Stack) -> None:
    order = await _flood(stack, 0.8)
    share = _normal_share_during_the_flood(order)
    print(f"PRIORITY_SHARE=0.8: the request queue's share during the flood {share:.3f}")
    print("".join(order))
    assert 0.14 <= share <= 0.3, order
    # The request queue moves all along: any 20 jobs drawn during the flood
    # (the share's window) hold at least 3 of its requests.
    flood = order[: len(order) - order[::-1].index("p")]
    assert all(flood[i : i + 20].count("n") >= 3 for i in range(len(flood) - 19)), order


async def test_share_one_serves_the_priority_queue_first_always(stack: Stack) -> None:
    order = await _flood(stack, 1.0)
    # Only what the worker held before the flood was seen (at most two).
    assert _normal_share_during_the_flood(order) <= 2 / 42, order
