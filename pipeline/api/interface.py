"""The one interface between the consumer and whatever draws the pictures."""

from __future__ import annotations

import threading
from typing import Protocol, runtime_checkable

from PIL import Image

from pipeline.api.spec import GenerationSpec


@runtime_checkable
class Generator(Protocol):
    """Loaded once, then asked for one batch of pictures at a time from one thread.

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

    @property
    def reference_side(self) -> int | None:
        """The side of the square reference picture the generator's image
        encoder takes (see :func:`pipeline.api.reference.prepare_reference`), or
        ``None`` when it uses no reference picture. Known once loaded."""
        ...

    def load(self) -> None:
        """Load weights and warm up; called once before the first job."""
        ...

    def prompt_tokens(self, spec: GenerationSpec) -> int:
        """How many text tokens the longest prompt the model encodes for `spec` is.

        The prompt as composed with its style prompt and, with guidance, the
        negative prompt, each counted by the model's own tokenizer (without
        start and end tokens). Called from any thread once loaded, also while
        a generation runs; it does no GPU work.
        """
        ...

    def generate(
        self,
        spec: GenerationSpec,
        image: Image.Image,
        stop: threading.Event | None = None,
    ) -> list[Image.Image]:
        """Draw exactly ``spec.num_images`` RGB pictures of ``spec.width`` x ``spec.height``.

        `image` is the reference picture, best already prepared at
        :attr:`reference_side`; one of another size is prepared here.

        Picture i uses seed ``(spec.seed + i) % 2**32`` and equals, up to
        floating-point batch effects, the one-picture result of that seed.
        Setting `stop` (from any thread) ends the generation at its next
        denoising step with :class:`~pipeline.api.errors.GenerationStopped`; the
        generator stays usable.
        """
        ...
