"""A compiled UNet that compiles once for every shape a request may take.

Requests vary the batch (1-4 pictures, doubled by classifier-free guidance),
the width and height (multiples of 64 up to 2048), and the prompt's length
(one 77-token window per 75 tokens of text). Compiled for static shapes,
each new combination would compile again (a minute or more for SDXL, past
``GENERATION_TIMEOUT_S``), and after torch's recompile limit the UNet would
silently run uncompiled. So:

- Shapes are dynamic from the first compilation (``dynamic=True``): one
  graph serves every batch of two or more, every size and every prompt
  length. torch still specialises a dimension of size 1, so a batch of one
  picture without guidance has a graph of its own; :data:`WARM_UP_BATCHES`
  lists what the warm-up draws so that both exist before the first job.
- The timestep is handed to the UNet as float32 whatever the scheduler
  makes of it: DPM-Solver and LCM count in int64, Euler in float32, and a
  new dtype is a new graph. The UNet turns it into float32 sinusoids at
  once, so the values, and the picture, are the same.
- The VAE decoder is not compiled. It runs once per job against the UNet's
  once per step, so compiling it gains little, and its convolutions guard on
  the activation's size (torch picks another kernel past a size): a large
  picture would compile it again in the middle of a job.
- Several IP-Adapters: the active one is a constant of the graph
  (:mod:`pipeline.engine.reference.ip_scale`), so the warm-up draws each kind once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
import torch

from pipeline.engine.untyped import SDXLPipeline

log = structlog.get_logger(__name__)

DEFAULT_BACKEND = "inductor"
RECOMPILE_LIMIT = 16
"""Graphs torch keeps per compiled function: two batch classes times the
adapters' kinds, with room to spare, so the UNet never falls back to eager."""

WARM_UP_BATCHES = ((1.0, 1), (5.0, 1))
"""(guidance scale, pictures) the warm-up draws: one picture without guidance
(the UNet sees a batch of 1) and with it (it sees 2: the dynamic graph)."""

WARM_UP_LARGEST_SIDE = 2048
"""The largest width and height a request may give. torch chooses a
convolution kernel by the input's size, and past a size another kernel is
another graph; the warm-up draws at the native size and at this one, so
both kinds of graph exist before the first job."""


def compile_for_every_shape(pipe: SDXLPipeline, mode: str | None, backend: str | None) -> None:
    """Compile `pipe`'s UNet with dynamic shapes, in place.

    `mode` is ``torch.compile``'s (inductor only); `backend` defaults to
    inductor. The UNet stays the same module (its ``forward`` is replaced),
    so the pipeline, its hooks and its configuration see the same object.
    """
    backend = backend or DEFAULT_BACKEND
    options: dict[str, Any] = {"backend": backend, "dynamic": True}
    if backend == DEFAULT_BACKEND:
        options["mode"] = mode
    # Without duck shaping, two dimensions that happen to be equal at the
    # first compilation (a square picture) are not assumed equal for good.
    torch.fx.experimental._config.use_duck_shape = False
    torch._dynamo.config.recompile_limit = max(
        torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT
    )
    unet = pipe.unet
    compiled = torch.compile(unet.forward, **options)
    unet.forward = _float_timesteps(compiled)
    log.info(
        "torch_compile_enabled",
        modules=["unet"],
        mode=mode,
        backend=backend,
        dynamic=True,
    )


def _float_timesteps(forward: Callable[..., Any]) -> Callable[..., Any]:
    def call(sample: torch.Tensor, timestep: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(timestep, torch.Tensor) and timestep.dtype != torch.float32:
            timestep = timestep.to(torch.float32)
        elif not isinstance(timestep, torch.Tensor):
            # A Python number would be a constant of the graph: one per step.
            timestep = torch.tensor(float(timestep), device=sample.device)
        return forward(sample, timestep, *args, **kwargs)

    return call
