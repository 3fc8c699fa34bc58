"""The SDXL code path, run with `builtin:tiny` on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import structlog

from pipeline.api.config import BUILTIN_TINY, PipelineConfig
from pipeline.api.interface import Generator
from pipeline.api.spec import JobKind
from pipeline.builtin.tiny import TINY_NATIVE_SIZE
from pipeline.engine.generator import SDXLGenerator
from tests.support.assets import draw_alike, load_generator, noise_picture, one, pixels
from tests.support.specs import spec

AVATAR = noise_picture(1)
OTHER = noise_picture(2)


def test_tiny_is_the_sdxl_generator_with_its_native_size(tiny: SDXLGenerator) -> None:
    assert isinstance(tiny, Generator)
    assert tiny.model_name == BUILTIN_TINY
    assert tiny.native_size == (TINY_NATIVE_SIZE, TINY_NATIVE_SIZE) == (128, 128)
    assert type(tiny.pipeline).__name__ == "StableDiffusionXLPipeline"
    assert tiny.pipeline.image_encoder is not None


@pytest.mark.parametrize("kind", [JobKind.MEMORY, JobKind.SUBJECT])
def test_picture_follows_the_input_image_when_scale_above_zero(
    tiny: SDXLGenerator, kind: JobKind
) -> None:
    job = spec(kind=kind, ip_adapter_scale=0.8)
    first = one(tiny, job, AVATAR)
    second = one(tiny, job, OTHER)
    assert first.mode == "RGB"
    assert first.size == (128, 128)
    assert np.abs(pixels(first) - pixels(second)).mean() > 1.0


@pytest.mark.parametrize("kind", [JobKind.MEMORY, JobKind.SUBJECT])
def test_input_image_has_no_effect_at_scale_zero(tiny: SDXLGenerator, kind: JobKind) -> None:
    job = spec(kind=kind, ip_adapter_scale=0.0)
    assert np.array_equal(pixels(one(tiny, job, AVATAR)), pixels(one(tiny, job, OTHER)))


def test_memory_and_subject_draw_different_pictures(tiny: SDXLGenerator) -> None:
    memory = one(tiny, spec(kind=JobKind.MEMORY), AVATAR)
    subject = one(tiny, spec(kind=JobKind.SUBJECT), AVATAR)
    assert not np.array_equal(pixels(memory), pixels(subject))


def test_same_seed_same_picture_other_seed_other_picture(tiny: SDXLGenerator) -> None:
    first = one(tiny, spec(seed=42), AVATAR)
    again = one(tiny, spec(seed=42), AVATAR)
    other = one(tiny, spec(seed=43), AVATAR)
    assert np.array_equal(pixels(first), pixels(again))
    assert np.abs(pixels(first) - pixels(other)).mean() > 1.0


def test_largest_seed_is_accepted(tiny: SDXLGenerator) -> None:
    assert one(tiny, spec(seed=2**32 - 1), AVATAR).size == (128, 128)


@pytest.mark.parametrize(("width", "height"), [(192, 128), (64, 256)])
def test_output_has_exactly_the_requested_size(
    tiny: SDXLGenerator, width: int, height: int
) -> None:
    picture = one(tiny, spec(width=width, height=height), AVATAR)
    assert picture.size == (width, height)
    assert picture.mode == "RGB"


def test_every_parameter_reaches_the_model(tiny: SDXLGenerator) -> None:
    base = pixels(one(tiny, spec(), AVATAR))
    for change in (
        {"prompt": "a rainy street"},
        {"style_prompt": "watercolour"},
        {"negative_prompt": "blurry"},
        {"guidance_scale": 9.0},
        {"num_inference_steps": 3},
    ):
        assert not np.array_equal(base, pixels(one(tiny, spec(**change), AVATAR))), change


def test_ip_adapter_off_gives_plain_text_to_image() -> None:
    with structlog.testing.capture_logs() as logs:
        plain = load_generator(
            PipelineConfig(model_path=BUILTIN_TINY, enable_ip_adapter=False, warmup=False)
        )
    assert any(entry["event"] == "ip_adapter_disabled" for entry in logs)
    assert plain.pipeline.image_encoder is None
    job = spec(ip_adapter_scale=1.0)
    assert np.array_equal(pixels(one(plain, job, AVATAR)), pixels(one(plain, job, OTHER)))


def test_lora_is_fused_at_load_and_changes_the_picture(
    tiny: SDXLGenerator, tiny_lora: Path
) -> None:
    with structlog.testing.capture_logs() as logs:
        fused = load_generator(
            PipelineConfig(model_path=BUILTIN_TINY, lora_path=str(tiny_lora), warmup=False)
        )
    assert any(entry["event"] == "lora_fused" for entry in logs)
    # Fused and unloaded: no LoRA layers remain to slow generation down.
    assert not any("lora" in name for name, _ in fused.pipeline.unet.named_modules())
    job = spec()
    assert np.abs(pixels(one(fused, job, AVATAR)) - pixels(one(tiny, job, AVATAR))).mean() > 1.0


def test_warm_up_runs_at_load() -> None:
    with structlog.testing.capture_logs() as logs:
        load_generator(PipelineConfig(model_path=BUILTIN_TINY, warmup=True))
    events = [entry["event"] for entry in logs]
    assert events.index("pipeline_warmed_up") < events.index("pipeline_ready")


def test_tiny_model_is_the_same_every_time(tiny: SDXLGenerator) -> None:
    rebuilt = load_generator(PipelineConfig(model_path=BUILTIN_TINY, warmup=False))
    assert draw_alike(rebuilt, tiny, spec(), AVATAR)


def test_new_ip_adapter_scales_do_not_recompile_a_compiled_unet() -> None:
    # One cross-attention layer is compiled, the kind whose processor holds
    # the scale. The eager backend traces as inductor does but needs no C
    # compiler; what is counted is how often the layer had to be traced.
    from torch._dynamo.utils import counters

    generator = load_generator(PipelineConfig(model_path=BUILTIN_TINY, warmup=False))
    unet = generator.pipeline.unet
    attention = next(m for name, m in unet.named_modules() if name.endswith("attn2"))
    attention.compile(backend="eager")
    counters.clear()
    pictures = [
        pixels(one(generator, spec(ip_adapter_scale=scale, num_inference_steps=1), AVATAR))
        for scale in (0.3, 0.0, 0.7, 0.33)
    ]
    assert counters["stats"]["unique_graphs"] == 1
    assert not np.array_equal(pictures[0], pictures[2])
