"""Cancellation through the S3 marker, in process against moto.

A job cancelled before it is drawn is never generated; one cancelled while it
generates is stopped through its stop event; either way a ``cancelled`` event,
no output, the request deleted. A job whose outputs exist is not affected,
and S3 trouble while looking for a marker cancels nothing.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from consumer.aws.clients import open_clients
from consumer.aws.storage import Storage
from consumer.clock import SystemClock
from consumer.contract.keys import cancel_key
from consumer.delivery import cancellation
from consumer.delivery.cancellation import CancelWatch
from tests.support.aws import REGION, Stack
from tests.support.helpers import Observer, eventually, memory, running, settings
from tests.support.recording import blank

POLL_S = 0.3


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """Holds generations until set; set at the end so no thread is left waiting."""
    event = threading.Event()
    yield event
    event.set()


def cancel(stack: Stack, job_id: str, user_id: str = "user1") -> float:
    """Write the job's marker as AutoBio does; returns when (monotonic)."""
    key = cancel_key("cancellations/", user_id, job_id)
    stack.client("s3").put_object(Bucket=stack.bucket, Key=key, Body=b"")
    return time.monotonic()


def _assert_cancelled(event: dict[str, Any], attributes: dict[str, str], job_id: str) -> None:
    assert (event["job_id"], event["status"]) == (job_id, "cancelled")
    assert "data" not in event
    assert "error" not in event
    assert attributes["status"] == "cancelled"


async def test_a_job_cancelled_before_it_is_taken_is_not_drawn(stack: Stack) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    generator = blank()
    cancel(stack, "early")
    stack.send(memory("early"))
    stack.send(memory("after-early"))
    async with running(generator, settings(cancel_poll_s=POLL_S)):
        events = await observer.wait(2)
    by_job = {e["job_id"]: (e, a) for e, a in zip(events, observer.attributes, strict=True)}
    _assert_cancelled(*by_job["early"], "early")
    assert by_job["after-early"][0]["status"] == "succeeded"
    assert len(generator.calls) == 1  # only the second job was drawn
    assert stack.outputs() == ["generated/user1/memory_after-early.png"]
    assert stack.queue_counts() == (0, 0)


async def test_a_job_cancelled_while_it_waits_never_begins(
    stack: Stack, gate: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    generator = blank(gate=gate)
    looks: list[tuple[str, bool]] = []
    look = CancelWatch.cancelled

    async def recorded(self: CancelWatch, user_id: str, job_id: str) -> bool:
        answer = await look(self, user_id, job_id)
        looks.append((job_id, answer))
        return answer

    monkeypatch.setattr(CancelWatch, "cancelled", recorded)
    async with running(generator, settings(cancel_poll_s=POLL_S)):
        stack.send(memory("first"))
        await eventually(generator.started.is_set, what="the first job to start")
        stack.send(memory("waiting"))
        await eventually(lambda: ("waiting", False) in looks, what="the second taken")
        cancel(stack, "waiting")
        # Seen by a poll while the first still holds the GPU.
        await eventually(lambda: ("waiting", True) in looks, within=POLL_S * 5, what="seen")
        assert generator.active == 1
        gate.set()
        events = await observer.wait(2)
    by_job = {e["job_id"]: (e, a) for e, a in zip(events, observer.attributes, strict=True)}
    _assert_cancelled(*by_job["waiting"], "waiting")
    assert by_job["first"][0]["status"] == "succeeded"
    assert len(generator.calls) == 1  # the cancelled job never reached the generator
    assert stack.outputs() == ["generated/user1/memory_first.png"]
    assert stack.queue_counts() == (0, 0)


async def test_a_running_batch_is_stopped_whole_within_a_poll(
    stack: Stack, gate: threading.Event
) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    generator = blank(gate=gate)
    async with running(generator, settings(cancel_poll_s=POLL_S)):
        stack.send(memory("batch", num_images=3))
        await eventually(generator.started.is_set, what="the generation to start")
        written = cancel(stack, "batch")
        stop = generator.stops[0]
        assert stop is not None
        await eventually(stop.is_set, within=5, what="the stop")
        stopped_after = time.monotonic() - written
        (event,) = await observer.wait(1)
        gate.set()
        stack.send(memory("next"))
        await observer.wait(2)
    _assert_cancelled(event, observer.attributes[0], "batch")
    assert stopped_after < POLL_S + 1.0  # a poll, plus one S3 HEAD on loopback
    assert observer.events[1]["status"] == "succeeded"
    assert stack.outputs() == ["generated/user1/memory_next.png"]
    assert stack.queue_counts() == (0, 0)


async def test_a_cancel_after_success_changes_nothing(stack: Stack) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    generator = blank()
    async with running(generator, settings(cancel_poll_s=POLL_S)):
        stack.send(memory("done"))
        (first,) = await observer.wait(1)
        cancel(stack, "done")
        # The same request again (a redelivery): its outputs exist, so it is reused.
        stack.send(memory("done"))
        events = await observer.wait(2)
    assert first["status"] == "succeeded"
    assert (events[1]["status"], events[1]["reused"]) == ("succeeded", True)
    assert stack.outputs() == ["generated/user1/memory_done.png"]
    assert len(generator.calls) == 1


async def test_s3_trouble_while_looking_cancels_nothing(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)

    async def broken(self: Storage, key: str) -> bool:
        if key.startswith("cancellations/"):
            raise ConnectionError("S3 is out")
        raise AssertionError(key)

    monkeypatch.setattr(Storage, "exists", broken)
    cancel(stack, "unseen")  # S3 cannot be asked, so the marker is not seen
    async with running(blank(latency_ms=int(POLL_S * 3000)), settings(cancel_poll_s=POLL_S)):
        stack.send(memory("unseen"))
        (event,) = await observer.wait(1)
    assert event["status"] == "succeeded"
    assert stack.outputs() == ["generated/user1/memory_unseen.png"]


async def test_a_slow_s3_reads_as_not_cancelled(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cancellation, "CHECK_TIMEOUT_S", 0.2)

    async def hanging(self: Storage, key: str) -> bool:
        await asyncio.sleep(30)
        return True

    monkeypatch.setattr(Storage, "exists", hanging)
    async with open_clients(REGION) as clients:
        watch = CancelWatch(Storage(clients.s3, stack.bucket), settings(), SystemClock())
        started = time.monotonic()
        assert await watch.cancelled("user1", "slow") is False
    assert time.monotonic() - started < 2


async def test_exists_reads_the_marker(stack: Stack) -> None:
    async with open_clients(REGION) as clients:
        storage = Storage(clients.s3, stack.bucket)
        assert await storage.exists("cancellations/user1/job-1") is False
        cancel(stack, "job-1")
        assert await storage.exists("cancellations/user1/job-1") is True
        assert await storage.exists("cancellations/user1/job-2") is False


class _QuickStorage:
    """Answers every look at once: the watch's loop races its own end."""

    calls = 0

    async def exists(self, key: str) -> bool:
        self.calls += 1
        await asyncio.sleep(0)
        return False


async def test_a_watch_always_ends_with_its_block() -> None:
    storage = _QuickStorage()
    watch = CancelWatch(storage, settings(cancel_poll_s=0.001), SystemClock())  # type: ignore[arg-type]
    for index in range(200):
        job = _job()
        async with asyncio.timeout(5):  # a watch that outlived its block would hang here
            async with watch.watching(job, "user1", f"job-{index}"):
                await asyncio.sleep(0.002 * (index % 3))
        assert not job.stop.is_set()
    assert storage.calls > 0


def _job() -> Any:
    class _Job:
        stop = threading.Event()
        cancelled = False

    return _Job()
