"""`builtin:blank`: no model, plain pictures after a simulated GPU time.

For load tests of the queue path on machines without a GPU: it costs no
memory, and while it "generates" it waits, which releases the GIL so the
event loop keeps running as it would while a real GPU works. The wait is on
the stop event, so a stop ends it at once, as a real generation ends at its
next step.
"""

from __future__ import annotations

import threading
import time

from PIL import Image

from pipeline.api.batch import image_seeds
from pipeline.api.config import BUILTIN_BLANK
from pipeline.api.errors import GenerationStopped
from pipeline.api.spec import GenerationSpec
from pipeline.api.tokens import spec_word_pieces

BLANK_NAME = BUILTIN_BLANK
BLANK_NATIVE_SIZE = (1024, 1024)


class BlankGenerator:
    """Plain pictures whose shade follows each picture's seed, after `latency_ms`."""

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

    @property
    def reference_side(self) -> None:
        """``None``: the picture is not used, so it is not prepared."""
        return None

    def load(self) -> None:
        """Nothing to load."""

    def prompt_tokens(self, spec: GenerationSpec) -> int:
        """No tokenizer: the pieces CLIP would split the prompts into, a lower
        bound of a real model's count (:mod:`pipeline.api.tokens`)."""
        return spec_word_pieces(spec.prompt, spec.style_prompt, spec.negative_prompt)

    def generate(
        self,
        spec: GenerationSpec,
        image: Image.Image,
        stop: threading.Event | None = None,
    ) -> list[Image.Image]:
        """``spec.num_images`` plain RGB pictures of the requested size after the latency.

        One latency per call, as a batch costs one pipeline call; a set
        `stop` (already, or during the wait) raises :class:`GenerationStopped`.
        """
        if stop is not None:
            if stop.wait(self._latency_s):
                raise GenerationStopped("generation stopped")
        elif self._latency_s:
            time.sleep(self._latency_s)
        # A shade per seed, so pictures of different jobs are told apart.
        return [
            Image.new("RGB", (spec.width, spec.height), (shade, shade, shade))
            for shade in (64 + seed % 128 for seed in image_seeds(spec))
        ]
