"""A generator for tests: wraps another, records its calls, fails or holds on demand."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from PIL import Image

from pipeline.api.interface import Generator
from pipeline.api.spec import GenerationSpec
from pipeline.builtin.blank import BlankGenerator

SIZE = 64


class Recording:
    """A generator around another that counts calls and can fail on demand.

    `failures` are raised by the first calls, one each, in order.
    `gate`, when given, holds every generation until it is set (a long GPU
    job); a set stop event ends that wait with the inner generator's
    ``GenerationStopped`` unless `ignore_stop` (a wedged GPU). `started` is
    set once a generation has begun; `stops` holds each call's stop event.
    `step_s` is how long a held generation takes to notice a stop (the rest
    of its denoising step). `native_size` is what a request without a size
    gets: `inner`'s own unless given, and :data:`SIZE` for the default blank
    generator, whose native size is SDXL's.
    """

    def __init__(
        self,
        inner: Generator | None = None,
        *,
        failures: Sequence[BaseException] = (),
        gate: threading.Event | None = None,
        ignore_stop: bool = False,
        step_s: float = 0.0,
        native_size: tuple[int, int] | None = None,
    ) -> None:
        self.inner = inner or BlankGenerator()
        self._native_size = native_size or (None if inner else (SIZE, SIZE))
        self.failures = list(failures)
        self.gate = gate
        self.ignore_stop = ignore_stop
        self.step_s = step_s
        self.stops: list[threading.Event | None] = []
        self.calls: list[GenerationSpec] = []
        self.images: list[Image.Image] = []
        self.finished = 0
        self.active = 0
        self.spans: list[tuple[float, float]] = []
        self.started = threading.Event()
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    @property
    def native_size(self) -> tuple[int, int]:
        return self._native_size or self.inner.native_size

    @property
    def draws(self) -> list[tuple[int, int]]:
        """The (seed, num_images) of every call, in order."""
        return [(spec.seed, spec.num_images) for spec in self.calls]

    @property
    def reference_side(self) -> int | None:
        return self.inner.reference_side

    def load(self) -> None:
        self.inner.load()

    def prompt_tokens(self, spec: GenerationSpec) -> int:
        return self.inner.prompt_tokens(spec)

    def generate(
        self,
        spec: GenerationSpec,
        image: Image.Image,
        stop: threading.Event | None = None,
    ) -> list[Image.Image]:
        started = time.monotonic()
        with self._lock:
            self.calls.append(spec)
            self.images.append(image)
            self.stops.append(stop)
            self.active += 1
            failure = self.failures.pop(0) if self.failures else None
        self.started.set()
        try:
            if self.gate is not None:
                self._hold(self.gate, None if self.ignore_stop else stop, self.step_s)
            if failure is not None:
                raise failure
            return self.inner.generate(spec, image, None if self.ignore_stop else stop)
        finally:
            with self._lock:
                self.active -= 1
                self.finished += 1
                self.spans.append((started, time.monotonic()))

    @staticmethod
    def _hold(gate: threading.Event, stop: threading.Event | None, step_s: float) -> None:
        deadline = time.monotonic() + 60
        while not gate.is_set():
            if stop is not None and stop.is_set():
                time.sleep(step_s)  # the step under way ends first
                return  # the inner generator raises GenerationStopped
            if time.monotonic() > deadline:
                raise TimeoutError("the test never opened the gate")
            # Both events matter and threading cannot wait on two: short waits.
            gate.wait(0.01)


def blank(latency_ms: int = 0, **kwargs: Any) -> Recording:
    """A recording `builtin:blank` generator."""
    return Recording(BlankGenerator(latency_ms), native_size=(SIZE, SIZE), **kwargs)
