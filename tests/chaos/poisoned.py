"""``illustrator run`` whose generator a poison request kills: for the chaos soak only.

``python -m tests.chaos.poisoned run`` is ``python -m consumer run`` with every
generator wrapped: a request whose prompt holds :data:`POISON` makes its
generation fail as a broken GPU does (:class:`PipelineBrokenError`, fatal), so
each worker that takes it stops with exit status 1. Only this test module
wraps the generator; ``illustrator run`` never does, so no request sent to a
deployed worker can do this.
"""

from __future__ import annotations

import sys
import threading

from PIL import Image

from pipeline.api import factory
from pipeline.api.config import PipelineConfig
from pipeline.api.errors import PipelineBrokenError
from pipeline.api.interface import Generator
from pipeline.api.spec import GenerationSpec

POISON = "poison-pill"
# What a poisoned worker reports: the fatal error's message, in its log and events.
BROKEN = "the GPU failed and cannot be used again (poison-pill)"


class Poisoned:
    """A generator that a request with :data:`POISON` in its prompt breaks."""

    def __init__(self, inner: Generator) -> None:
        self.inner = inner

    @property
    def model_name(self) -> str:
        """The wrapped generator's model."""
        return self.inner.model_name

    @property
    def native_size(self) -> tuple[int, int]:
        """The wrapped generator's native size."""
        return self.inner.native_size

    @property
    def reference_side(self) -> int | None:
        """The wrapped generator's reference side."""
        return self.inner.reference_side

    def load(self) -> None:
        """Load the wrapped generator."""
        self.inner.load()

    def prompt_tokens(self, spec: GenerationSpec) -> int:
        """The wrapped generator's count."""
        return self.inner.prompt_tokens(spec)

    def generate(
        self, spec: GenerationSpec, image: Image.Image, stop: threading.Event | None = None
    ) -> list[Image.Image]:
        """The wrapped generator's pictures, or a broken GPU for a poison request."""
        if POISON in spec.prompt:
            raise PipelineBrokenError(BROKEN)
        return self.inner.generate(spec, image, stop)


def _poisoned_factory(config: PipelineConfig) -> Generator:
    return Poisoned(_create(config))


_create = factory.create_generator


def main() -> int:
    """Run the CLI with the factory's generators poisoned."""
    factory.create_generator = _poisoned_factory
    from consumer.cli.main import main as cli

    return cli()


if __name__ == "__main__":
    sys.exit(main())
