"""A compiled UNet with the styles' LoRA slot: no style and no strength compiles again.

As in test_compile_once.py, the eager backend traces as inductor does
without generating code, and torch's own tally of graphs is counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch._dynamo.utils import counters

from pipeline.api.config import BUILTIN_TINY, PipelineConfig
from pipeline.api.lora_files import file_digest, inspect_lora, slot_for
from pipeline.api.spec import JobKind
from pipeline.engine.generator import SDXLGenerator
from tests.support.assets import load_generator, make_tiny_lora, noise_picture
from tests.support.specs import spec

pytestmark = pytest.mark.timeout(1200)

STRENGTHS = (0.3, 1.0, 1.5)


def graphs() -> int:
    return int(counters["stats"]["unique_graphs"])


@pytest.fixture(scope="module")
def compiled(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[SDXLGenerator, int, list[tuple[str, Path]]]]:
    """The tiny model with a slot for three styles, compiled and warmed up; the graphs that took."""
    folder = tmp_path_factory.mktemp("compiled-styles")
    loras = [
        ("ink", make_tiny_lora(folder / "ink.safetensors", seed=1, rank=4)),
        ("wash", make_tiny_lora(folder / "wash.safetensors", seed=2, rank=8, targets=("to_v",))),
        (
            "grain",
            make_tiny_lora(
                folder / "grain.safetensors", seed=3, rank=2, alpha=1, targets=("ff.net.2",)
            ),
        ),
    ]
    config = PipelineConfig(
        model_path=BUILTIN_TINY,
        torch_compile=True,
        torch_compile_mode="max-autotune",
        torch_compile_backend="eager",
        warmup=True,
        style_slot=slot_for(inspect_lora(path) for _, path in loras),
        style_loras=tuple((name, str(path), file_digest(path)) for name, path in loras),
    )
    torch._dynamo.reset()
    counters.clear()
    generator = load_generator(config)
    yield generator, graphs(), loras
    torch._dynamo.reset()


def test_the_warm_up_compiles_what_it_compiles_without_styles(
    compiled: tuple[SDXLGenerator, int, list[tuple[str, Path]]],
) -> None:
    _, warmed, _ = compiled
    # As test_compile_once: a batch of one and every larger batch.
    assert warmed == 2


def test_three_styles_at_three_strengths_compile_nothing_new(
    compiled: tuple[SDXLGenerator, int, list[tuple[str, Path]]],
) -> None:
    generator, _, loras = compiled
    before = graphs()
    avatar = noise_picture(2)
    drawn = []
    for name, path in loras:
        for strength in STRENGTHS:
            job = spec(
                num_inference_steps=1,
                style=name,
                style_strength=strength,
                style_digest=file_digest(path),
                style_lora=str(path),
                style_lora_scale=strength,
            )
            drawn.append(generator.generate(job, avatar)[0])
    # A job without a style, and one of each batch class, between styles.
    generator.generate(spec(num_inference_steps=1, kind=JobKind.SUBJECT), avatar)
    generator.generate(spec(num_inference_steps=1, guidance_scale=1.0), avatar)
    assert generator.style_slot is not None
    assert generator.style_slot.swaps >= len(loras)
    assert graphs() == before
    # Nine different looks: the swaps took effect in the compiled UNet.
    assert len({picture.tobytes() for picture in drawn}) == len(drawn)
    print(f"compiled graphs: {before} after the warm-up, {graphs()} after 3 styles x 3 strengths")
