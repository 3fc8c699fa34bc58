"""The receive loop: prefetch, pipelining, drain, heartbeat, AWS trouble, burst."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from structlog.testing import capture_logs

from consumer.aws.clients import open_clients
from consumer.delivery.options import WorkerOptions
from consumer.delivery.worker import EXIT_OK, Worker
from consumer.delivery.worker_state import WorkerState
from tests.support.aws import REGION, Stack
from tests.support.helpers import FAST, Observer, eventually, memory, running, settings, submit
from tests.support.recording import blank


async def test_at_most_one_request_is_prefetched(stack: Stack) -> None:
    gate = threading.Event()
    generator = blank(gate=gate)
    observer = submit(stack, *(f"p-{n}" for n in range(5)))
    async with running(generator) as handle:
        await eventually(lambda: generator.active == 1, what="a generation")
        await eventually(lambda: len(handle.worker.jobs) == 2, what="one prefetched")
        # Another second of polling takes nothing more.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert len(handle.worker.jobs) <= 2
            await asyncio.sleep(0.05)
        assert stack.queue_counts() == (3, 2)
        assert handle.worker.state is WorkerState.BUSY
        gate.set()
        await observer.wait(5)
    assert len(generator.calls) == 5


async def test_gpu_never_waits_for_the_network(stack: Stack) -> None:
    generator = blank(latency_ms=500)
    observer = submit(stack, *(f"pipe-{n}" for n in range(4)))
    async with running(generator):
        await observer.wait(4, within=30)
    spans = sorted(generator.spans)
    gaps = [later[0] - earlier[1] for earlier, later in itertools.pairwise(spans)]
    # Each next job was received and downloaded while the previous one generated,
    # and its upload, publish and delete ran while the next one generated.
    assert max(gaps) < 0.05, gaps


async def test_drain_releases_prefetched_and_finishes_running(stack: Stack) -> None:
    gate = threading.Event()
    generator = blank(gate=gate)
    observer = submit(stack, *(f"d-{n}" for n in range(3)))
    async with running(generator, settings(drain_timeout_s=30)) as handle:
        await eventually(
            lambda: len(handle.worker.jobs) == 2 and generator.active == 1,
            what="one running, one prefetched",
        )
        handle.worker.request_drain("test drain")
        assert handle.worker.state is WorkerState.DRAINING
        # The prefetched request is back on the queue while the job still runs.
        await eventually(lambda: stack.queue_counts() == (2, 1), what="prefetched released")
        assert generator.active == 1
        gate.set()
        assert await asyncio.wait_for(handle.task, 10) == EXIT_OK
    (event,) = await observer.wait(1)
    assert event["status"] == "succeeded"
    assert stack.queue_counts() == (2, 0)
    assert len(generator.calls) == 1


async def test_drain_timeout_releases_the_running_job(stack: Stack) -> None:
    gate = threading.Event()
    generator = blank(gate=gate)
    observer = submit(stack, "slow-1")
    try:
        async with running(generator, settings(drain_timeout_s=0.3)) as handle:
            await eventually(lambda: generator.active == 1, what="the generation")
            started = time.monotonic()
            handle.worker.request_drain("test drain")
            assert await asyncio.wait_for(handle.task, 10) == EXIT_OK
            assert time.monotonic() - started < 3
            assert stack.queue_counts() == (1, 0)
    finally:
        gate.set()
    assert await observer.settle(0.3) == []


async def test_drain_cancels_the_long_poll_at_once(stack: Stack) -> None:
    options = WorkerOptions(poll_wait_s=20)
    async with running(blank(), options=options) as handle:
        polls: list[int] = []
        receive = handle.worker.queue.receive

        async def recording(max_messages: int, wait_s: int, visibility_s: int) -> list[Any]:
            polls.append(wait_s)
            return await receive(max_messages, wait_s, visibility_s)

        handle.worker.queue.receive = recording  # type: ignore[method-assign]
        await eventually(lambda: polls, what="a long poll")
        started = time.monotonic()
        handle.worker.request_drain("test")
        assert await asyncio.wait_for(handle.task, 5) == EXIT_OK
        assert time.monotonic() - started < 1.5


async def test_second_request_with_immediate_releases_at_once(stack: Stack) -> None:
    gate = threading.Event()
    generator = blank(gate=gate)
    submit(stack, "imm-1")
    try:
        async with running(generator, settings(drain_timeout_s=60)) as handle:
            await eventually(lambda: generator.active == 1, what="the generation")
            handle.worker.request_drain("SIGTERM")
            handle.worker.request_drain("SIGTERM", immediate=True)
            assert await asyncio.wait_for(handle.task, 5) == EXIT_OK
            assert stack.queue_counts() == (1, 0)
    finally:
        gate.set()


async def test_burst_mode_stops_when_the_queue_is_empty(stack: Stack) -> None:
    observer = submit(stack, *(f"b-{n}" for n in range(3)))
    options = WorkerOptions(burst=True, poll_wait_s=0)
    async with running(blank(latency_ms=50), options=options) as handle:
        assert await asyncio.wait_for(handle.task, 20) == EXIT_OK
    assert len(await observer.wait(3)) == 3
    assert stack.queue_counts() == (0, 0)


async def test_heartbeat_keeps_a_long_job_hidden(make_env_stack: Callable[..., Stack]) -> None:
    stack = make_env_stack(visibility_timeout=1)
    generator = blank(latency_ms=3500)
    observer = submit(stack, "hb-1")
    async with running(generator):
        await eventually(lambda: generator.active == 1, what="the generation")
        # A second consumer polling all along never sees the request.
        while generator.active:
            assert await asyncio.to_thread(stack.receive_all, stack.queue_url) == []
            await asyncio.sleep(0.2)
        (event,) = await observer.wait(1)
    assert event["attempts"] == 1


async def test_two_consumers_and_a_job_three_times_the_visibility_timeout(
    make_env_stack: Callable[..., Stack],
) -> None:
    stack = make_env_stack(visibility_timeout=2)
    stack.put_input("avatars/user1.png")
    first, second = blank(latency_ms=6500), blank(latency_ms=6500)
    observer = Observer(stack)
    async with running(first) as a, running(second) as b:
        await eventually(
            lambda: a.worker.state is WorkerState.READY and b.worker.state is WorkerState.READY,
            what="both ready",
        )
        stack.send(memory("twice-1"))
        (event,) = await observer.wait(1, within=20)
        await observer.settle(2.5)
    assert len(observer.events) == 1
    assert event["attempts"] == 1
    assert len(first.calls) + len(second.calls) == 1
    assert stack.outputs() == ["generated/user1/memory_twice-1.png"]


async def test_aws_trouble_backs_off_turns_unhealthy_and_clears(stack: Stack) -> None:
    sqs = stack.client("sqs")
    name = f"late-{uuid.uuid4().hex[:8]}"
    url = f"{stack.endpoint}/123456789012/{name}"
    config = settings(sqs_queue_url=url)
    with capture_logs() as logs:
        async with running(blank(), config) as handle:
            worker = handle.worker
            await eventually(
                lambda: worker.metrics.loop_errors._value.get() >= 3, what="repeated failures"
            )
            # The queue is missing from the start: unhealthy, not "starting" for ever.
            assert worker.state is WorkerState.UNHEALTHY
            assert "GetQueueAttributes" in worker.board.health().body["message"]
            assert sqs.create_queue(QueueName=name)["QueueUrl"] == url
            await eventually(lambda: _state(worker) is WorkerState.READY, what="ready")
            # The queue vanishes while the loop runs: unhealthy, then healthy again.
            sqs.delete_queue(QueueUrl=url)
            await eventually(lambda: worker.state is WorkerState.UNHEALTHY, what="unhealthy")
            report = worker.board.health()
            assert report.status_code == 503
            assert report.body["status"] == "unhealthy"
            sqs.create_queue(QueueName=name)
            await eventually(lambda: _state(worker) is WorkerState.READY, what="recovered")
    failures = [e for e in logs if e["event"] == "aws_call_failed"]
    # Logged once per backoff, not once per spin.
    assert len(failures) == worker.metrics.loop_errors._value.get()
    assert all(e["retry_in_s"] > 0 for e in failures)
    assert any(e["event"] == "aws_recovered" for e in logs)


async def test_worker_accepts_clients_and_a_clock(stack: Stack) -> None:
    observer = submit(stack, "w-1")
    async with open_clients(REGION) as clients:
        worker = Worker(
            generator=blank(),
            clients=clients,
            settings=settings(),
            options=WorkerOptions(burst=True, poll_wait_s=0),
        )
        assert worker.state is WorkerState.STARTING
        assert await asyncio.wait_for(worker.run(), 20) == EXIT_OK
        assert await worker.wait_stopped() == EXIT_OK
    (event,) = await observer.wait(1)
    assert event["status"] == "succeeded"
    assert FAST.poll_wait_s == 1


def _state(worker: Worker) -> WorkerState:
    return worker.state
