"""Denoising with no step that makes the host wait for the GPU.

A step that reads a value of the GPU on the host (``bool(t >= 0)``, a host
table indexed with a GPU tensor) or copies a host tensor to the GPU (noise
drawn by a CPU generator) waits for all the work queued before it: the GPU
then idles while the host prepares the next step. So, for every scheduler:

- **The starting noise** is drawn on the host from one CPU generator per
  picture, seeded with the picture's seed, and handed to the pipeline
  (``latents``): the same on every device, and picture i of a batch starts
  where the one-picture job of its seed starts.
- **The step noise** of the schedulers that add some (Euler ancestral, LCM,
  TCD) comes from one generator per picture on the device, seeded with the
  same seeds. On the CPU these are the generators that drew the starting
  noise, continuing their streams, so pictures there are what they always
  were.
- **The scheduler counts on the host**: its timesteps and tables stay on the
  CPU (``set_timesteps`` is told so for the job), where reading them costs
  nothing, and the UNet gets each timestep from a copy made on the device
  once per job.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from pipeline.engine.untyped import SDXLPipeline

HOST = torch.device("cpu")
# Made per job for a device that is not the host; tests put a stand-in here.
DEVICE_GENERATOR: Any = torch.Generator


def starting_noise(
    seeds: Sequence[int], shape: tuple[int, int, int], dtype: torch.dtype
) -> tuple[torch.Tensor, list[torch.Generator]]:
    """The starting latents of one picture per seed, and the generators that drew them.

    Drawn as diffusers 0.42's ``randn_tensor`` draws them from a list of CPU
    generators (one ``(1, *shape)`` draw each, in `dtype`), so a job is the
    same picture it was when diffusers drew them.
    """
    generators = [torch.Generator(device=HOST).manual_seed(seed) for seed in seeds]
    latents = torch.cat(
        [torch.randn((1, *shape), generator=g, device=HOST, dtype=dtype) for g in generators]
    )
    return latents, generators


def step_generators(
    seeds: Sequence[int], device: torch.device, host: list[torch.Generator]
) -> list[Any]:
    """One generator per picture for the step noise, on `device`.

    On the host the generators of :func:`starting_noise` go on; elsewhere
    each is a device generator seeded with the picture's seed, so the noise
    is drawn where it is used.
    """
    if device.type == HOST.type:
        return host
    return [DEVICE_GENERATOR(device=device).manual_seed(seed) for seed in seeds]


class HostSchedule:
    """A UNet that takes host timesteps, and jobs whose scheduler runs on the host.

    Installed once on the UNet (a forward pre-hook); :meth:`job` wraps one
    pipeline call.
    """

    def __init__(self, unet: Any) -> None:
        self._on_device: dict[float, torch.Tensor] = {}
        unet.register_forward_pre_hook(self._device_timestep, with_kwargs=True)

    def device_timestep(self, timestep: Any) -> Any:
        """The device's copy of a host `timestep` of the current job, else `timestep`."""
        if isinstance(timestep, torch.Tensor) and timestep.device.type == HOST.type:
            return self._on_device.get(float(timestep), timestep)
        return timestep

    def _device_timestep(
        self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if len(args) > 1:
            args = (args[0], self.device_timestep(args[1]), *args[2:])
        elif "timestep" in kwargs:
            kwargs = {**kwargs, "timestep": self.device_timestep(kwargs["timestep"])}
        return args, kwargs

    @contextmanager
    def job(self, pipe: SDXLPipeline, device: torch.device) -> Iterator[None]:
        """For one pipeline call: timesteps on the host, their float32 copies on `device`.

        float32 whatever the scheduler counts in (int64 for DDIM, LCM, TCD
        and DPM-Solver): the UNet turns timesteps into float32 sinusoids at
        once, so the picture is the same, and a compiled UNet sees one dtype.
        """
        scheduler = pipe.scheduler
        on_host = scheduler.set_timesteps

        def set_timesteps(steps: Any = None, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("device", None)
            on_host(steps, HOST, *args[1:], **kwargs)
            timesteps = scheduler.timesteps
            copies = timesteps.to(device=device, dtype=torch.float32)
            self._on_device = {
                float(t): copies[index] for index, t in enumerate(timesteps.tolist())
            }

        scheduler.set_timesteps = set_timesteps
        try:
            yield
        finally:
            del scheduler.set_timesteps
            self._on_device = {}
