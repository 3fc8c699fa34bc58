"""Output safety: every drawn picture checked, flagged ones redrawn, then refused.

Torch-free: the checker is any :class:`PictureChecker` (the real one is
:class:`pipeline.engine.safety_checker.SafetyChecker`). A flagged picture i of a
job with seed s and n pictures is drawn again with seed
``(s + i + k * n) mod 2^32`` for redraw k = 1, 2, ... up to the limit; a
picture still flagged after the last redraw fails the job with
:class:`~pipeline.api.errors.ContentFilteredError`. Flagged pictures are
dropped here and never returned, so nothing downstream can write them.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from PIL import Image

from pipeline.api.batch import SEED_MODULUS, image_seeds
from pipeline.api.errors import ContentFilteredError
from pipeline.api.interface import Generator, graphs_built
from pipeline.api.spec import GenerationSpec

DEFAULT_MAX_REDRAWS = 2
CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")


def checker_folder_problem(folder: Path) -> str | None:
    """What is wrong with `folder` as a safety checker folder, or ``None``.

    Checks the layout without torch: the two JSON files parse, the model
    configuration is a CLIP one with a vision part, and a weights file exists.
    """
    if not folder.is_dir():
        return "not a folder"
    for name in (CONFIG_FILE, PREPROCESSOR_FILE):
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            return f"{name} is not valid JSON ({type(error).__name__})"
        if not isinstance(data, dict):
            return f"{name} is not a JSON object"
        if name == CONFIG_FILE and (
            data.get("model_type") != "clip" or not isinstance(data.get("vision_config"), dict)
        ):
            return f"{name} is not a CLIP configuration with a vision_config"
    if not any((folder / name).is_file() for name in WEIGHTS_FILES):
        return f"no weights file ({' or '.join(WEIGHTS_FILES)})"
    return None


@runtime_checkable
class PictureChecker(Protocol):
    """Says which of a batch of decoded pictures must not be delivered."""

    def check(self, pictures: Sequence[Image.Image]) -> list[bool]:
        """One flag per picture, in order: True means the picture is unsafe."""
        ...


@dataclass(frozen=True, slots=True)
class CheckedPictures:
    """Pictures, the checker's flag for each, and the checker's time."""

    pictures: list[Image.Image]
    flags: list[bool]
    seconds: float


@runtime_checkable
class ChecksItsPictures(Protocol):
    """A generator that hands its pictures to a checker where they were decoded.

    The SDXL generator does: the checker reads the decoded pictures on the
    GPU, before they are copied to the host, instead of from Pillow pictures.
    """

    def generate_checked(
        self,
        spec: GenerationSpec,
        image: Image.Image,
        stop: threading.Event | None,
        checker: PictureChecker,
    ) -> CheckedPictures:
        """``generate``'s pictures, with `checker`'s flags for them."""
        ...


@dataclass(frozen=True, slots=True)
class Drawn:
    """A job's delivered pictures, the seed each was drawn with, and the checker's work.

    Attributes:
        pictures: ``num_images`` pictures, none of them flagged.
        seeds: the seed of each delivered picture (a redrawn one's redraw seed).
        checked: pictures the checker looked at, redraws included (0 without one).
        flagged: pictures it flagged, redraws included.
        redraws: pictures drawn again because they were flagged.
        check_seconds: time spent in the checker.
        graphs: graphs the job compiled or recorded (torch.compile); 0 when
            the warm-up foresaw its shapes, as it should.
    """

    pictures: list[Image.Image]
    seeds: list[int]
    checked: int = 0
    flagged: int = 0
    redraws: int = 0
    check_seconds: float = 0.0
    graphs: int = 0


def redraw_seed(spec: GenerationSpec, index: int, redraw: int) -> int:
    """The seed of picture `index`'s redraw number `redraw` (from 1)."""
    return (spec.seed + index + redraw * spec.num_images) % SEED_MODULUS


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """Consecutive runs of sorted `indices` as (first, length)."""
    runs: list[tuple[int, int]] = []
    for index in indices:
        if runs and runs[-1][0] + runs[-1][1] == index:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((index, 1))
    return runs


class CheckedGenerator:
    """A generator whose pictures pass the safety checker before anyone sees them.

    It is itself a :class:`~pipeline.api.interface.Generator`: `generate` returns
    only pictures the checker passed (a redrawn picture in place of a flagged
    one); :meth:`draw` also says which seed each picture was drawn with and
    what the checker did. Load the checker before handing it here.
    """

    def __init__(
        self,
        generator: Generator,
        checker: PictureChecker,
        max_redraws: int = DEFAULT_MAX_REDRAWS,
    ) -> None:
        if max_redraws < 0:
            raise ValueError(f"max_redraws must be at least 0, got {max_redraws}")
        self.generator = generator
        self.checker = checker
        self.max_redraws = max_redraws

    @property
    def model_name(self) -> str:
        """The wrapped generator's model."""
        return self.generator.model_name

    @property
    def native_size(self) -> tuple[int, int]:
        """The wrapped generator's native size."""
        return self.generator.native_size

    @property
    def reference_side(self) -> int | None:
        """The side of the prepared reference picture the wrapped generator takes."""
        return self.generator.reference_side

    @property
    def graphs_built(self) -> int:
        """The wrapped generator's graphs (0 where it does not count them)."""
        return graphs_built(self.generator)

    def load(self) -> None:
        """Load the wrapped generator (the checker is loaded already)."""
        self.generator.load()

    def prompt_tokens(self, spec: GenerationSpec) -> int:
        """The wrapped generator's count."""
        return self.generator.prompt_tokens(spec)

    def generate(
        self,
        spec: GenerationSpec,
        image: Image.Image,
        stop: threading.Event | None = None,
    ) -> list[Image.Image]:
        """The job's pictures, every one passed by the checker (see :meth:`draw`)."""
        return self.draw(spec, image, stop).pictures

    def draw(
        self,
        spec: GenerationSpec,
        image: Image.Image,
        stop: threading.Event | None = None,
        on_call: Callable[[GenerationSpec], object] | None = None,
    ) -> Drawn:
        """Draw, check, redraw the flagged pictures; raise when one stays flagged.

        Only flagged pictures are drawn again, consecutive ones in one batch
        (their redraw seeds are consecutive too). `on_call`, when given, is
        told the spec of each call of the wrapped generator as it begins (the
        first draw and each redraw). Raises
        :class:`~pipeline.api.errors.ContentFilteredError` when a picture is still
        flagged after ``max_redraws`` redraws.
        """
        graphs = graphs_built(self.generator)
        began = on_call or _ignore
        began(spec)
        seeds = image_seeds(spec)
        seconds = 0.0

        def drawn(job: GenerationSpec) -> tuple[list[Image.Image], list[bool]]:
            nonlocal seconds
            if isinstance(self.generator, ChecksItsPictures):
                result = self.generator.generate_checked(job, image, stop, self.checker)
                pictures, flags = list(result.pictures), list(result.flags)
                seconds += result.seconds
            else:
                pictures = list(self.generator.generate(job, image, stop))
                started = time.perf_counter()
                flags = self.checker.check(pictures)
                seconds += time.perf_counter() - started
            if len(flags) != len(pictures):
                raise ValueError(f"checker gave {len(flags)} flags for {len(pictures)} pictures")
            return pictures, flags

        pictures, flags = drawn(spec)
        checked, flagged, redraws = len(pictures), sum(flags), 0
        for redraw in range(1, self.max_redraws + 1):
            pending = [i for i, flag in enumerate(flags) if flag]
            if not pending:
                break
            for first, length in _runs(pending):
                again = dataclasses.replace(
                    spec, seed=redraw_seed(spec, first, redraw), num_images=length
                )
                began(again)
                # The flagged pictures are replaced (and so dropped) here.
                redrawn, again_flags = drawn(again)
                for offset, (picture, flag) in enumerate(zip(redrawn, again_flags, strict=True)):
                    pictures[first + offset] = picture
                    seeds[first + offset] = redraw_seed(spec, first + offset, redraw)
                    flags[first + offset] = flag
                flagged += sum(again_flags)
            redraws += len(pending)
            checked += len(pending)
        if any(flags):
            still = sum(flags)
            pictures.clear()
            error = ContentFilteredError(
                f"{still} of {spec.num_images} picture(s) flagged by the safety checker "
                f"after {self.max_redraws} redraw(s)",
                checked=checked,
                flagged=flagged,
                redraws=redraws,
            )
            error.check_seconds = seconds
            raise error
        graphs = graphs_built(self.generator) - graphs
        return Drawn(pictures, seeds, checked, flagged, redraws, seconds, graphs)


def _ignore(spec: GenerationSpec) -> None:
    return None


def draw(
    generator: Generator,
    spec: GenerationSpec,
    image: Image.Image,
    stop: threading.Event | None = None,
    on_call: Callable[[GenerationSpec], object] | None = None,
) -> Drawn:
    """A job's pictures and seeds; checked when `generator` is a :class:`CheckedGenerator`.

    `on_call` is told the spec of each generator call as it begins: one, or
    with a checker one more per redraw.
    """
    if isinstance(generator, CheckedGenerator):
        return generator.draw(spec, image, stop, on_call)
    if on_call is not None:
        on_call(spec)
    graphs = graphs_built(generator)
    pictures = list(generator.generate(spec, image, stop))
    return Drawn(pictures, image_seeds(spec), graphs=graphs_built(generator) - graphs)
