"""Cooperative stop: a generation ends at its next denoising step when asked.

Diffusers checks its ``interrupt`` flag only to skip the remaining steps; the
SDXL pipeline (0.42) still decodes the latents afterwards, a whole VAE pass
for a picture nobody wants. So the step callback sets the flag (for any code
that reads it) and raises, which leaves the pipeline at once: no further
step, no decode.
"""

from __future__ import annotations

import threading
from typing import Any

from PIL import Image

from pipeline.api.errors import GenerationStopped
from pipeline.engine.untyped import SDXLPipeline


class _StopRequested(Exception):
    """Raised inside diffusers' loop to leave it; never seen outside this module."""


class StepWatch:
    """diffusers' ``callback_on_step_end``: counts steps, stops when `stop` is set."""

    def __init__(self, stop: threading.Event | None) -> None:
        self._stop = stop
        self.steps_done = 0

    def __call__(
        self, pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]
    ) -> dict[str, Any]:
        """Called by diffusers after each step, with that step's index."""
        self.steps_done = step + 1
        if self._stop is not None and self._stop.is_set():
            pipe._interrupt = True
            raise _StopRequested
        return tensors


def run_stoppable(
    pipe: SDXLPipeline,
    arguments: dict[str, Any],
    stop: threading.Event | None,
) -> list[Image.Image]:
    """``pipe(**arguments).images``, ended early by :class:`GenerationStopped` if `stop` is set.

    A stop already set ends the call before any work; one set during a step
    ends it when that step finishes.
    """
    if stop is None:
        images: list[Image.Image] = pipe(**arguments).images
        return images
    if stop.is_set():
        raise GenerationStopped("generation stopped before its first step")
    watch = StepWatch(stop)
    try:
        images = pipe(**arguments, callback_on_step_end=watch).images
    except _StopRequested:
        raise GenerationStopped(
            f"generation stopped after step {watch.steps_done} of "
            f"{arguments.get('num_inference_steps')}"
        ) from None
    return images
