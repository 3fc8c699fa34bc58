"""Cooperative stop: a generation ends within two denoising steps when asked.

Diffusers checks its ``interrupt`` flag only to skip the remaining steps; the
SDXL pipeline (0.42) still decodes the latents afterwards, a whole VAE pass
for a picture nobody wants. So the step callback sets the flag (for any code
that reads it) and raises, which leaves the pipeline at once: no further
step, no decode.

On a GPU the host only queues work. With nothing in a step that makes it wait
(CUDA graphs replay a whole UNet in one call), it would queue all the steps
in milliseconds and look at the stop long before the GPU had done any of
them. So each step records an event on the GPU's stream, and the callback
waits for the event of the step before (:data:`STEPS_AHEAD`): the host stays
one step ahead of the GPU, which always has the next step queued and never
idles, and a stop is seen within two steps of being set. The steps counted
are the steps the GPU has finished.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any, Protocol

import torch

from pipeline.api.errors import GenerationStopped
from pipeline.engine.untyped import SDXLPipeline

STEPS_AHEAD = 1
"""Steps the host may queue beyond the last one the GPU finished."""


class StepEvent(Protocol):
    """What the watch needs of a ``torch.cuda.Event``."""

    def record(self) -> None:
        """Mark the point in the stream where everything queued so far ends."""

    def synchronize(self) -> None:
        """Wait until the GPU has passed that point."""


def step_events(device: torch.device) -> Callable[[], StepEvent] | None:
    """A maker of step events for `device`; ``None`` where work runs as it is called."""
    if device.type == "cuda":
        return torch.cuda.Event
    return None


class _StopRequested(Exception):
    """Raised inside diffusers' loop to leave it; never seen outside this module."""


class StepWatch:
    """diffusers' ``callback_on_step_end``: counts finished steps, stops when `stop` is set.

    With `events` (a device that queues work), each call records an event
    and waits for the one :data:`STEPS_AHEAD` steps back; without, every
    step has finished by the time its callback runs.
    """

    def __init__(
        self,
        stop: threading.Event | None,
        events: Callable[[], StepEvent] | None = None,
        ahead: int = STEPS_AHEAD,
    ) -> None:
        self._stop = stop
        self._events = events
        self._ahead = ahead
        self._pending: collections.deque[tuple[int, StepEvent]] = collections.deque()
        self.steps_done = 0

    def __call__(
        self, pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]
    ) -> dict[str, Any]:
        """Called by diffusers after queuing each step, with that step's index."""
        if self._events is None:
            self.steps_done = step + 1
        else:
            event = self._events()
            event.record()
            self._pending.append((step, event))
            while len(self._pending) > self._ahead:
                finished, oldest = self._pending.popleft()
                oldest.synchronize()
                self.steps_done = finished + 1
        if self._stop is not None and self._stop.is_set():
            pipe._interrupt = True
            raise _StopRequested
        return tensors


def run_stoppable(
    pipe: SDXLPipeline,
    arguments: dict[str, Any],
    stop: threading.Event | None,
    events: Callable[[], StepEvent] | None = None,
) -> Any:
    """``pipe(**arguments)``'s first output, ended early by :class:`GenerationStopped`.

    A stop already set ends the call before any work; one set during a step
    ends it within two steps (see the module's note). With `events`, the
    host never runs more than :data:`STEPS_AHEAD` steps ahead of the device.
    """
    if stop is not None and stop.is_set():
        raise GenerationStopped("generation stopped before its first step")
    if stop is None and events is None:
        return pipe(**arguments, return_dict=False)[0]
    watch = StepWatch(stop, events)
    try:
        return pipe(**arguments, callback_on_step_end=watch, return_dict=False)[0]
    except _StopRequested:
        raise GenerationStopped(
            f"generation stopped after step {watch.steps_done} of "
            f"{arguments.get('num_inference_steps')}"
        ) from None
