"""A stop lands within two steps on a device that queues work, CUDA graphs or not.

On a GPU the host only queues the steps; without something to wait on it
would queue all of them before the GPU finished the first, and see a stop
only after the whole job. Here a fake event stands in for ``torch.cuda.Event``
on a device that does a step's work only when the host waits for it: the
slowest GPU there is, and the one under which a stop is hardest to honour.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import torch

from pipeline.api.config import BUILTIN_TINY, PipelineConfig
from pipeline.api.errors import GenerationStopped
from pipeline.engine import generator as generator_module
from pipeline.engine.generator import SDXLGenerator
from pipeline.engine.runtime.stopping import STEPS_AHEAD, StepWatch, step_events
from tests.support.assets import load_generator, noise_picture
from tests.support.specs import spec


class QueueingDevice:
    """Steps queued by the host, done by the device only when the host waits."""

    def __init__(self) -> None:
        self.queued = 0
        self.done = 0
        self.waits: list[int] = []
        self.on_done: dict[int, threading.Event] = {}

    def queue_step(self) -> None:
        self.queued += 1

    def event(self) -> FakeEvent:
        return FakeEvent(self)


class FakeEvent:
    """``torch.cuda.Event`` on a :class:`QueueingDevice`."""

    def __init__(self, device: QueueingDevice) -> None:
        self.device = device
        self.at: int | None = None

    def record(self) -> None:
        self.at = self.device.queued

    def synchronize(self) -> None:
        assert self.at is not None, "waited on an event never recorded"
        self.device.waits.append(self.at)
        while self.device.done < self.at:
            self.device.done += 1
            if self.device.done in self.device.on_done:
                self.device.on_done[self.device.done].set()


def test_the_watch_waits_one_step_back_and_counts_finished_steps() -> None:
    device = QueueingDevice()
    watch = StepWatch(None, device.event)
    for step in range(5):
        device.queue_step()
        watch(None, step, None, {})
        # The host is one step ahead: step `step` is queued, the one before done.
        assert device.done == watch.steps_done == step + 1 - STEPS_AHEAD
    assert device.waits == [1, 2, 3, 4]


def test_without_events_every_step_has_finished_when_its_callback_runs() -> None:
    watch = StepWatch(None)
    watch(None, 0, None, {})
    assert watch.steps_done == 1
    assert step_events(torch.device("cpu")) is None
    assert step_events(torch.device("cuda")) is torch.cuda.Event


@pytest.fixture
def fresh() -> SDXLGenerator:
    return load_generator(PipelineConfig(model_path=BUILTIN_TINY, warmup=False))


def test_a_stop_lands_within_two_steps_and_counts_the_steps_the_device_did(
    fresh: SDXLGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = QueueingDevice()
    monkeypatch.setattr(generator_module, "step_events", lambda _: device.event)
    unet = fresh.pipeline.unet
    real = unet.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        device.queue_step()
        return real(*args, **kwargs)

    monkeypatch.setattr(unet, "forward", forward)
    stop = threading.Event()
    # The stop is set the moment the device finishes its third step.
    device.on_done[3] = stop
    with pytest.raises(GenerationStopped, match="after step 3 of 20"):
        fresh.generate(spec(num_inference_steps=20), noise_picture(1), stop)
    # Queued: the three done and the one the device was given meanwhile.
    assert device.queued == 3 + STEPS_AHEAD
    assert device.done == 3
