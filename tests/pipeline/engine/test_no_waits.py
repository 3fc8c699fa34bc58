"""No denoising step makes the host wait for the GPU, whatever the scheduler.

There is no GPU here, so the meta device stands in for one: like a GPU's,
its tensors have no values the host can read without waiting (here: none
at all), and a host tensor moved to it is a copy to the device. A torch
function mode watches every call from the first denoising step to the
decoded pictures (still on the device) and writes down each call that on a
GPU would wait for the work queued before it: a device value read on the
host, a host table indexed with a device tensor, a host tensor copied to
the device. A device generator (which cannot be made without a GPU) is a
stand-in that draws meta noise.

The first test shows what diffusers 0.42 does when left to itself (the
scheduler's timesteps on the device, CPU generators for the step noise);
the second, that the generator's own way leaves nothing to wait for.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode

from pipeline.api.config import BUILTIN_TINY, SCHEDULERS, PipelineConfig
from pipeline.engine import generator as generator_module
from pipeline.engine.generator import SDXLGenerator
from pipeline.engine.reference.ip_scale import IPAdapterScale
from pipeline.engine.runtime import sync_free
from pipeline.engine.runtime.schedulers import configure_scheduler
from tests.support.assets import load_generator, noise_picture
from tests.support.specs import spec

DEVICE = torch.device("meta")
TINY = PipelineConfig(model_path=BUILTIN_TINY, warmup=False)
READ, INDEX, COPY = "reads a device value", "indexes a host table by device", "copies to the device"
_READS = {
    torch.Tensor.__bool__: True,
    torch.Tensor.item: 0,
    torch.Tensor.__int__: 0,
    torch.Tensor.__index__: 0,
    torch.Tensor.__float__: 0.0,
}


_TRANSFERS = {torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.copy_, torch.tensor, torch.as_tensor}


class DeviceGenerator(torch.Generator):
    """Stands in for ``torch.Generator(device="cuda")``: it draws on the device."""

    def __new__(cls, device: torch.device) -> DeviceGenerator:
        return super().__new__(cls)  # a host generator underneath, never drawn from

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self._device = torch.device(device)
        self.seed: int | None = None

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return self._device

    def manual_seed(self, seed: int) -> DeviceGenerator:  # type: ignore[override]
        self.seed = seed
        return self


class Waits(TorchFunctionMode):
    """Writes down the calls that would make the host wait, once `watching`."""

    def __init__(self) -> None:
        super().__init__()
        self.watching = False
        self.found: set[tuple[str, str]] = set()

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        if isinstance(kwargs.get("generator"), DeviceGenerator):
            return torch.empty(args[0], device=DEVICE, dtype=kwargs.get("dtype"))
        if not self.watching:
            return func(*args, **kwargs)
        first = args[0] if args else None
        if func in _READS and _on_device(first):
            self._note(READ)
            return _READS[func]
        if func is torch.Tensor.nonzero and _on_device(first):
            self._note(READ)
            return torch.zeros(1, first.dim(), dtype=torch.long)
        if func is torch.Tensor.__getitem__ and not _on_device(first) and _on_device(args[1]):
            self._note(INDEX)
            return torch.empty((), dtype=first.dtype, device=DEVICE)
        result = func(*args, **kwargs)
        # A host number in a device operation is passed as an argument, no
        # copy; a transfer of host memory is one.
        source = args[1] if func is torch.Tensor.copy_ else first
        if func in _TRANSFERS and _on_device(result) and not _on_device(source):
            self._note(COPY)
        return result

    def _note(self, what: str) -> None:
        frame = sys._getframe(2)
        while frame.f_back and "/diffusers/" not in frame.f_code.co_filename:
            frame = frame.f_back
        module = frame.f_code.co_filename.rsplit("/", 1)[-1].removesuffix(".py")
        self.found.add((what, f"{module}.{frame.f_code.co_name}"))


def _on_device(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.device.type == DEVICE.type
    if isinstance(value, tuple | list):
        return any(_on_device(item) for item in value)
    return False


@pytest.fixture(scope="module")
def on_device() -> SDXLGenerator:
    """A tiny generator moved to the stand-in device (shapes only, no values)."""
    generator = load_generator(TINY)
    pipe = generator.pipeline
    pipe.to(DEVICE)
    generator._device = DEVICE
    generator._ip_scale = IPAdapterScale(pipe.unet)
    return generator


@contextmanager
def watched(generator: SDXLGenerator) -> Iterator[Waits]:
    """Watch from the first denoising step on."""
    waits = Waits()
    scheduler = generator.pipeline.scheduler
    real = scheduler.scale_model_input

    def first_step(*args: Any, **kwargs: Any) -> Any:
        waits.watching = True
        return real(*args, **kwargs)

    scheduler.scale_model_input = first_step
    try:
        with waits:
            yield waits
    finally:
        del scheduler.scale_model_input


def draw(generator: SDXLGenerator, scheduler: str) -> set[tuple[str, str]]:
    configure_scheduler(generator.pipeline, dataclasses.replace(TINY, scheduler=scheduler))
    job = spec(num_inference_steps=3, num_images=2)
    with watched(generator) as waits:
        decoded = generator._draw(job, noise_picture(1), None)
    assert [tuple(p.shape) for p in decoded.pixels] == [(128, 128, 3)] * 2
    assert all(p.device == DEVICE for p in decoded.pixels)
    return waits.found


def test_left_to_itself_diffusers_waits_in_some_schedulers_steps(
    on_device: SDXLGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    @contextmanager
    def as_diffusers_does(self: Any, pipe: Any, device: Any) -> Iterator[None]:
        # diffusers puts the timesteps on the device and leaves every other
        # table on the host (Euler and DPM-Solver move their sigmas back,
        # which the meta device cannot do, hence the detour).
        scheduler = pipe.scheduler
        real = scheduler.set_timesteps

        def set_timesteps(steps: int, device: Any = None, **kwargs: Any) -> None:
            real(steps, "cpu", **kwargs)
            scheduler.timesteps = scheduler.timesteps.to(DEVICE)

        scheduler.set_timesteps = set_timesteps
        try:
            yield
        finally:
            del scheduler.set_timesteps

    monkeypatch.setattr(sync_free.HostSchedule, "job", as_diffusers_does)
    monkeypatch.setattr(generator_module, "step_generators", lambda seeds, device, host: host)
    found = {name: draw(on_device, name) for name in SCHEDULERS}
    by_kind = {
        kind: {name for name, calls in found.items() if any(k == kind for k, _ in calls)}
        for kind in (READ, INDEX, COPY)
    }
    # DDIM, LCM and TCD index their host tables with the device's timestep
    # and compare it with 0 on the host; LCM and TCD also read the next one.
    assert by_kind[INDEX] == {"DDIMScheduler", "LCMScheduler", "TCDScheduler"}
    assert by_kind[READ] == {"DDIMScheduler", "LCMScheduler", "TCDScheduler"}
    # Euler ancestral and LCM draw their step noise on the host (TCD would
    # too, but the pipeline calls it with eta 0: no noise).
    assert by_kind[COPY] == {"EulerAncestralDiscreteScheduler", "LCMScheduler"}
    assert ("copies to the device", "torch_utils.randn_tensor") in found["LCMScheduler"]
    assert found["EulerDiscreteScheduler"] == found["DPMSolverMultistepScheduler"] == set()


@pytest.mark.parametrize("name", SCHEDULERS)
def test_no_step_of_any_scheduler_waits(
    on_device: SDXLGenerator, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    made: list[DeviceGenerator] = []

    def device_generator(device: torch.device) -> DeviceGenerator:
        made.append(DeviceGenerator(device))
        return made[-1]

    monkeypatch.setattr(sync_free, "DEVICE_GENERATOR", device_generator)
    assert draw(on_device, name) == set()
    # The step noise of each picture from a generator on the device, seeded
    # with the picture's seed.
    assert [(g.device, g.seed) for g in made] == [(DEVICE, 1234), (DEVICE, 1235)]


def test_on_the_host_the_step_noise_continues_the_starting_noises_generators() -> None:
    latents, host = sync_free.starting_noise([5, 6], (4, 2, 2), torch.float32)
    # Each picture's noise is the one-picture draw of its seed.
    alone = torch.randn((1, 4, 2, 2), generator=torch.Generator().manual_seed(6))
    assert torch.equal(latents[1:], alone)
    assert sync_free.step_generators([5, 6], torch.device("cpu"), host) is host
