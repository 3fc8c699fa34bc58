"""Stopping a generation: at its deadline, at the end of a drain, on a second signal.

A stopped generation writes nothing, its request goes back on the queue, and
the worker never finishes while the GPU thread is still inside the generator;
a GPU that does not come back after a stop is wedged (exit 1).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Sequence

import pytest
from PIL import Image

from consumer.delivery.worker import EXIT_FATAL, EXIT_OK
from pipeline.api.safety import CheckedGenerator
from tests.support.aws import Stack
from tests.support.helpers import FAST, Observer, eventually, memory, running, settings
from tests.support.recording import Recording, blank

# A short visibility keeps the receive hold short: an interrupted long poll
# that takes a released request hides it for that long only.
VISIBILITY_S = 2
QUICK_GRACE = dataclasses.replace(FAST, stop_grace_s=0.5)


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """Holds generations until set; set at the end so no thread is left waiting."""
    held = threading.Event()
    yield held
    held.set()


async def test_deadline_counts_from_the_start_not_the_wait_in_line(stack: Stack) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    # Each generation takes 0.6 s of a 1 s deadline: the second one waits for
    # the first in line, and must not be stopped for that.
    generator = blank(latency_ms=600)
    async with running(generator, settings(generation_timeout_s=1.0)):
        stack.send(memory("line-1"))
        stack.send(memory("line-2"))
        events = await observer.wait(2, within=20)
    assert {e["status"] for e in events} == {"succeeded"}
    assert not any(stop is not None and stop.is_set() for stop in generator.stops)


async def test_gpu_wedged_past_the_deadline_is_fatal(stack: Stack, gate: threading.Event) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    generator = Recording(gate=gate, ignore_stop=True)
    config = settings(generation_timeout_s=0.3, visibility_timeout_s=VISIBILITY_S)
    async with running(generator, config, QUICK_GRACE) as worker:
        stack.send(memory("wedged-1"))
        code = await worker.task
        assert code == EXIT_FATAL
        assert not worker.worker.board.live
        assert worker.worker.board.health().status_code == 503
        assert "wedged" in (worker.worker.board.fatal_reason or "")
        # Still inside the generator: nothing came back.
        assert generator.finished == 0
    await eventually(lambda: stack.queue_counts() == (1, 0), within=10, what="released")
    assert await observer.settle(0.3) == []
    assert stack.outputs() == []


@pytest.mark.parametrize("immediate", [False, True], ids=["drain-timeout", "second-signal"])
async def test_drain_stops_the_generation_and_waits_for_the_gpu(
    stack: Stack, gate: threading.Event, immediate: bool
) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    # The GPU takes a while to come back, longer than the release takes.
    generator = Recording(gate=gate, step_s=1.0)
    # A second signal does not wait for the drain timeout at all.
    drain_s = 60.0 if immediate else 0.2
    config = settings(drain_timeout_s=drain_s, visibility_timeout_s=VISIBILITY_S)
    async with running(generator, config) as worker:
        stack.send(memory("drained-1"))
        await eventually(generator.started.is_set, within=20, what="the generation to start")
        worker.worker.request_drain("test")
        if immediate:
            worker.worker.request_drain("second signal", immediate=True)
        assert await worker.task == EXIT_OK
        # The worker finished only once the GPU thread had come back.
        assert generator.finished == 1
        (stop,) = generator.stops
        assert stop is not None
        assert stop.is_set()
    await eventually(lambda: stack.queue_counts() == (1, 0), within=10, what="released")
    assert await observer.settle(0.3) == []
    assert stack.outputs() == []


async def test_drain_with_a_wedged_gpu_exits_fatal(stack: Stack, gate: threading.Event) -> None:
    stack.put_input("avatars/user1.png")
    generator = Recording(gate=gate, ignore_stop=True)
    config = settings(drain_timeout_s=0.1, visibility_timeout_s=VISIBILITY_S)
    async with running(generator, config, QUICK_GRACE) as worker:
        stack.send(memory("drain-wedged-1"))
        await eventually(generator.started.is_set, within=20, what="the generation to start")
        worker.worker.request_drain("test")
        assert await worker.task == EXIT_FATAL
        assert not worker.worker.board.live
    # Released before the wait for the GPU, so another worker can take it.
    await eventually(lambda: stack.queue_counts() == (1, 0), within=10, what="released")


class FlagFirstDraw:
    """A safety checker that flags every picture of the first batch it sees."""

    def __init__(self) -> None:
        self.batches = 0

    def check(self, pictures: Sequence[Image.Image]) -> list[bool]:
        self.batches += 1
        return [self.batches == 1] * len(pictures)


async def test_each_safety_redraw_has_a_deadline_of_its_own(stack: Stack) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    # Each call takes 0.6 s of its 1 s deadline; the draw and its redraw
    # together take 1.2 s, and must not be stopped for that.
    inner = blank(latency_ms=600)
    generator = CheckedGenerator(inner, FlagFirstDraw(), max_redraws=1)
    async with running(generator, settings(generation_timeout_s=1.0)) as handle:
        stack.send(memory("redrawn-1"))
        (event,) = await observer.wait(1, within=20)
        assert not handle.task.done()
    assert event["status"] == "succeeded"
    assert event["data"][0]["seed"] != event["parameters"]["seed"]  # the redraw's
    assert len(inner.calls) == 2
    assert not any(stop is not None and stop.is_set() for stop in inner.stops)


async def test_the_deadline_grows_with_the_cost(stack: Stack) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    # 0.7 s of generation: past the 0.5 s deadline of a request of cost 50 or
    # less, within the 1 s of one of cost 100 (100 steps of 1024x1024).
    generator = blank(latency_ms=700)
    costly = memory("cost-100", num_inference_steps=100, width=1024, height=1024)
    async with running(generator, settings(generation_timeout_s=0.5)) as handle:
        stack.send(costly)
        (event,) = await observer.wait(1, within=20)
        assert event["status"] == "succeeded"
        stack.send(memory("cost-50", num_inference_steps=50, width=1024, height=1024))
        assert await handle.task == EXIT_FATAL  # this one ran past its deadline
    assert [spec.num_inference_steps for spec in generator.calls] == [100, 50]
