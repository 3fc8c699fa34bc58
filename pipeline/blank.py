"""`builtin:blank`: no model, a plain picture after a simulated GPU time.

For load tests of the queue path on machines without a GPU: it costs no
memory, and while it "generates" it sleeps, which releases the GIL so the
event loop keeps running as it would while a real GPU works.
"""

from __future__ import annotations

import time

from PIL import Image

from pipeline.spec import GenerationSpec

BLANK_NAME = "builtin:blank"
BLANK_NATIVE_SIZE = (1024, 1024)


class BlankGenerator:
    """A plain picture whose shade follows the seed, after `latency_ms`."""

    def __init__(self, latency_ms: int = 0) -> None:
        if latency_ms < 0:
            raise ValueError("latency_ms must not be negative")
        self._latency_s = latency_ms / 1000.0

    @property
    def model_name(self) -> str:
        """``builtin:blank``."""
        return BLANK_NAME

    @property
    def native_size(self) -> tuple[int, int]:
        """SDXL's native size, so requests without a size behave as in production."""
        return BLANK_NATIVE_SIZE

    def load(self) -> None:
        """Nothing to load."""

    def generate(self, spec: GenerationSpec, image: Image.Image) -> Image.Image:
        """A plain RGB picture of the requested size after the simulated latency."""
        if self._latency_s:
            time.sleep(self._latency_s)
        # A shade per seed, so pictures of different jobs are told apart.
        shade = 64 + spec.seed % 128
        return Image.new("RGB", (spec.width, spec.height), (shade, shade, shade))
