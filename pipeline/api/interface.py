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

        Picture i uses seed ``(spec.seed + i) % 2**32`` and starts from that
        seed's noise, as the one-picture job of that seed does: on a CPU it is
        that picture (within 1/255); on a GPU it is the same scene, drawn by
        kernels chosen for the batch's size (see the contract).
        Setting `stop` (from any thread) ends the generation at its next
        denoising step with :class:`~pipeline.api.errors.GenerationStopped`; the
        generator stays usable.
        """
        ...


@runtime_checkable
class CountsGraphs(Protocol):
    """A generator that says how many graphs it compiled or recorded (torch.compile)."""

    @property
    def graphs_built(self) -> int:
        """Graphs compiled, and CUDA graphs recorded, since the process started.

        Grows during the load; a job that makes it grow built graphs of its
        own (a shape the warm-up did not foresee).
        """
        ...


def graphs_built(generator: object) -> int:
    """``generator.graphs_built`` where it counts them, else 0."""
    return generator.graphs_built if isinstance(generator, CountsGraphs) else 0
