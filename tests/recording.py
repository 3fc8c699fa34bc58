"""A generator for tests: wraps another, records its calls, fails or holds on demand."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from PIL import Image

from pipeline.blank import BlankGenerator
from pipeline.interface import Generator
from pipeline.spec import GenerationSpec

SIZE = 64


class Recording:
    """A generator around another that counts calls and can fail on demand.

    `failures` are raised by the first calls, one each, in order.
    `gate`, when given, holds every generation until it is set (a long GPU
    job); `started` is set once a generation has begun.
    """

    def __init__(
        self,
        inner: Generator | None = None,
        *,
        failures: Sequence[BaseException] = (),
        gate: threading.Event | None = None,
    ) -> None:
        self.inner = inner or BlankGenerator()
        self.failures = list(failures)
        self.gate = gate
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
        return (SIZE, SIZE)

    def load(self) -> None:
        self.inner.load()

    def generate(
        self, spec: GenerationSpec, image: Image.Image, stop: threading.Event | None = None
    ) -> list[Image.Image]:
        started = time.monotonic()
        with self._lock:
            self.calls.append(spec)
            self.images.append(image)
            self.active += 1
            failure = self.failures.pop(0) if self.failures else None
        self.started.set()
        try:
            if self.gate is not None and not self.gate.wait(60):
                raise TimeoutError("the test never opened the gate")
            if failure is not None:
                raise failure
            return self.inner.generate(spec, image, stop)
        finally:
            with self._lock:
                self.active -= 1
                self.finished += 1
                self.spans.append((started, time.monotonic()))


def blank(latency_ms: int = 0, **kwargs: Any) -> Recording:
    """A recording `builtin:blank` generator."""
    return Recording(BlankGenerator(latency_ms), **kwargs)
