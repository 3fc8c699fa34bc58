"""The one interface between the consumer and whatever draws the pictures."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from PIL import Image

from pipeline.spec import GenerationSpec


@runtime_checkable
class Generator(Protocol):
    """Loaded once, then asked for one picture at a time from one thread.

    Implementations: the SDXL generator (also behind `builtin:tiny`) and the
    blank generator. `generate` is blocking and is called from a single worker
    thread; it must never be called concurrently.
    """

    @property
    def model_name(self) -> str:
        """The model reported in completion events."""
        ...

    @property
    def native_size(self) -> tuple[int, int]:
        """(width, height) used when a request gives no size."""
        ...

    def load(self) -> None:
        """Load weights and warm up; called once before the first job."""
        ...

    def generate(self, spec: GenerationSpec, image: Image.Image) -> Image.Image:
        """Draw one RGB picture of exactly ``spec.width`` x ``spec.height``."""
        ...
