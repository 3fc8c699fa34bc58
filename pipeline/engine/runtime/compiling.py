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
  Neither graph depends on the picture's size: cuDNN takes a convolution of
  any size the contract allows (the one size test on the way to it, over
  2**31 values in one picture's input or output, is far above the largest
  of a 2048x2048 SDXL picture: 960 channels of 256x256, about 63 M).
- On a CPU, where the UNet is compiled only for tests and benchmarks of
  compilation, oneDNN is off while the compiled UNet runs. oneDNN takes a
  convolution of one picture only past 20480 input values, and each such
  threshold the trace meets is a guard: a batch of one would get another
  graph wherever a size puts some of the UNet's convolutions on either
  side of it, a class the GPU does not have. Without it torch traces the
  same graphs on the CPU as on a GPU, so the tests count the GPU's (inductor
  may add guards of its own, which only a run on a GPU shows).
- The timestep is handed to the UNet as float32 whatever the scheduler
  makes of it: DPM-Solver and LCM count in int64, Euler in float32, and a
  new dtype is a new graph. The UNet turns it into float32 sinusoids at
  once, so the values, and the picture, are the same.
- The VAE decoder is not compiled. It runs once per job against the UNet's
  once per step, so compiling it gains little; compiled, each class of its
  shapes (one picture or several, whole or tiled decodes, whose edge tiles
  are smaller) would need a warm-up too, or compile in the middle of a job.
- Several IP-Adapters: the active one is a constant of the graph
  (:mod:`pipeline.engine.reference.ip_scale`), so the warm-up draws each kind once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
"""(guidance scale, pictures) the warm-up draws at the native size: one
picture without guidance (the UNet sees a batch of 1) and with it (it sees
2: the dynamic graph, which then serves every size, batch and prompt)."""


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
    unet.forward = _as_compiled(compiled)
    log.info(
        "torch_compile_enabled",
        modules=["unet"],
        mode=mode,
        backend=backend,
        dynamic=True,
    )


def _as_compiled(forward: Callable[..., Any]) -> Callable[..., Any]:
    def call(sample: torch.Tensor, timestep: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(timestep, torch.Tensor) and timestep.dtype != torch.float32:
            timestep = timestep.to(torch.float32)
        elif not isinstance(timestep, torch.Tensor):
            # A Python number would be a constant of the graph: one per step.
            timestep = torch.tensor(float(timestep), device=sample.device)
        if sample.device.type != "cpu":
            return forward(sample, timestep, *args, **kwargs)
        with _without_onednn():
            return forward(sample, timestep, *args, **kwargs)

    return call


@contextmanager
def _without_onednn() -> Iterator[None]:
    # Only the one flag: torch.backends.mkldnn.flags() would also reset
    # oneDNN's determinism and TF32 settings to its own defaults.
    enabled = torch._C._get_mkldnn_enabled()
    torch._C._set_mkldnn_enabled(False)
    try:
        yield
    finally:
        torch._C._set_mkldnn_enabled(enabled)
