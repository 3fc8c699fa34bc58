"""The safety checker on the decoded pictures where they lie, in float16 on a GPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pipeline.api.config import BUILTIN_TINY, PipelineConfig
from pipeline.api.safety import CheckedGenerator
from pipeline.engine.generator import SDXLGenerator
from pipeline.engine.safety_checker import SafetyChecker, checker_dtype, prepare_clip_input
from tests.support import safety_checkers
from tests.support.assets import load_generator, noise_picture
from tests.support.specs import spec

# The checker rounds each score (cosine minus threshold) to three decimals
# and flags it above 0: the decision lies at a margin of 0.0005.
DECISION = 0.0005


def test_on_a_gpu_the_checker_runs_in_float16_unless_float32_is_asked_for() -> None:
    cuda = torch.device("cuda")
    assert checker_dtype(cuda, None) == torch.float16
    assert checker_dtype(cuda, "bfloat16") == torch.float16
    assert checker_dtype(cuda, "float32") == torch.float32
    assert checker_dtype(torch.device("cpu"), None) == torch.float32


@pytest.mark.parametrize(
    "size", [(128, 128), (64, 200), (300, 64), (1024, 1024), (64, 64), (20, 24), (64, 2048)]
)
def test_the_input_prepared_on_the_device_is_the_processors(
    tmp_path: Path, size: tuple[int, int]
) -> None:
    checker = SafetyChecker(str(safety_checkers.flag_none(tmp_path)))
    checker.load()
    pictures = [noise_picture(seed, size) for seed in (1, 2)]
    expected = checker._processor(images=pictures, return_tensors="pt")["pixel_values"]
    batch = torch.stack([torch.from_numpy(np.array(p)) for p in pictures])
    ours = prepare_clip_input(batch.permute(0, 3, 1, 2).float(), checker._processor)
    assert ours.shape == expected.shape
    # Pillow's resize, rounded to 8 bits twice: within a level in a few pixels
    # (Pillow sums in fixed point, torch in floating point).
    level = 1 / 255 / min(checker._processor.image_std)
    difference = (ours - expected).abs()
    assert float(difference.max()) <= level + 1e-6
    assert float(difference.mean()) <= 0.02 * level


def borderline_checker(
    folder: Path, count: int = 64
) -> tuple[Path, list[torch.Tensor], list[float]]:
    """A checker whose threshold sits among the pictures' scores; the pictures and their margins."""
    pictures = [noise_picture(seed, (96, 96)) for seed in range(count)]
    reference = safety_checkers.embedding(pictures[0])
    embeddings = [safety_checkers.embedding(picture) for picture in pictures[1:]]
    cosines = [safety_checkers.cosine(reference, e) for e in embeddings]
    threshold = float(np.median(cosines))
    embeds = torch.ones(safety_checkers.CONCEPTS, safety_checkers.PROJECTION_DIM)
    embeds[0] = reference
    weights = [threshold] + [safety_checkers.NEVER] * (safety_checkers.CONCEPTS - 1)
    path = safety_checkers.save_checker(folder, concept_weights=weights, concept_embeds=embeds)
    pixels = [torch.from_numpy(np.asarray(p).copy()) for p in pictures[1:]]
    return path, pixels, [c - threshold - DECISION for c in cosines]


def flags(path: Path, pixels: list[torch.Tensor], dtype: str) -> list[bool]:
    checker = SafetyChecker(str(path), device="cpu", dtype=dtype)
    checker.load()
    return checker.check_pixels(pixels)


def test_float16_flags_borderline_pictures_as_float32_does_and_bfloat16_does_not(
    tmp_path: Path,
) -> None:
    path, pixels, margins = borderline_checker(tmp_path)
    # Borderline: within a few thousandths of the decision, yet further from
    # it than float16's rounding reaches (a few ten-thousandths here).
    near = [i for i, m in enumerate(margins) if 0.0004 < abs(m) < 0.004]
    assert len(near) >= 8
    chosen = [pixels[i] for i in near]
    exact = flags(path, chosen, "float32")
    assert exact == [margins[i] > 0 for i in near]
    assert flags(path, chosen, "float16") == exact
    # bfloat16 keeps 8 bits of mantissa: about 0.001 at these scores, enough
    # to decide some of the same pictures the other way.
    assert flags(path, chosen, "bfloat16") != exact


def test_the_generator_hands_the_checker_its_decoded_device_pixels(tmp_path: Path) -> None:
    generator = load_generator(PipelineConfig(model_path=BUILTIN_TINY, warmup=False))
    checker = SafetyChecker(str(safety_checkers.flag_none(tmp_path)))
    checker.load()
    seen: list[Any] = []
    real = checker.check_pixels

    def check_pixels(pixels: Any) -> list[bool]:
        seen.append([(p.dtype, tuple(p.shape)) for p in pixels])
        return real(pixels)

    def on_the_host(pictures: Any) -> list[bool]:
        raise AssertionError("the checker was handed Pillow pictures")

    checker.check_pixels = check_pixels  # type: ignore[method-assign]
    checker.check = on_the_host  # type: ignore[method-assign]
    drawn = CheckedGenerator(generator, checker).draw(spec(num_images=2), noise_picture(1))
    assert seen == [[(torch.uint8, (128, 128, 3))] * 2]
    assert drawn.checked == 2
    assert len(drawn.pictures) == 2


def test_a_generator_of_pictures_alone_is_checked_on_its_pictures(tiny: SDXLGenerator) -> None:
    class Blank:
        model_name, native_size, reference_side = "blank", (64, 64), None

        def load(self) -> None: ...

        def generate(self, spec: Any, image: Any, stop: Any = None) -> list[Any]:
            return [noise_picture(3, (64, 64))] * spec.num_images

    class Counting:
        def __init__(self) -> None:
            self.pictures = 0

        def check(self, pictures: Any) -> list[bool]:
            self.pictures += len(pictures)
            return [False] * len(pictures)

    counting = Counting()
    drawn = CheckedGenerator(Blank(), counting).draw(spec(num_images=3), noise_picture(1))
    assert counting.pictures == drawn.checked == 3
