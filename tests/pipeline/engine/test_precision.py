"""PipelineConfig's device, dtype, vae_path and fp16 variant, honoured end to end."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import structlog
import torch

from pipeline.api.config import BUILTIN_TINY, PipelineConfig
from pipeline.api.errors import ModelLoadError
from pipeline.builtin.tiny import _vae, build_tiny
from pipeline.engine.generator import SDXLGenerator
from pipeline.engine.untyped import _at_least
from pipeline.engine.weights.loading import weights_variant
from tests.support.assets import load_generator, noise_picture, one, pixels
from tests.support.specs import spec

AVATAR = noise_picture(1)


@pytest.fixture(scope="module")
def model_with_variant(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny in full precision, plus an ``fp16`` variant whose UNet differs."""
    folder = tmp_path_factory.mktemp("variant") / "model"
    build_tiny().pipe.save_pretrained(folder, safe_serialization=True)
    half = build_tiny().pipe
    with torch.no_grad():
        for parameter in half.unet.parameters():
            parameter.add_(0.05)
    half.to(dtype=torch.float16)
    half.save_pretrained(folder, safe_serialization=True, variant="fp16")
    assert any(folder.glob("unet/*.fp16.safetensors"))
    return folder


def _first_unet_weight(generator: SDXLGenerator) -> torch.Tensor:
    weight: torch.Tensor = next(generator.pipeline.unet.parameters())
    return weight.detach().float()


def test_half_precision_reads_the_fp16_variant(
    model_with_variant: Path, tiny_on_disk: tuple[Path, Path]
) -> None:
    _, ip_dir = tiny_on_disk
    config = PipelineConfig(
        model_path=str(model_with_variant), ip_adapter_path=str(ip_dir), warmup=False
    )
    full = load_generator(config)
    with structlog.testing.capture_logs() as logs:
        half = load_generator(dataclasses.replace(config, dtype="float16"))
    assert any(entry["event"] == "loading_variant" for entry in logs)
    assert half.pipeline.unet.dtype == torch.float16
    assert full.pipeline.unet.dtype == torch.float32
    # The variant's weights are the nudged ones; the full files the originals.
    nudge = _first_unet_weight(half) - _first_unet_weight(full)
    assert torch.allclose(nudge, torch.full_like(nudge, 0.05), atol=1e-3)


def test_variant_only_for_half_precision(model_with_variant: Path, tmp_path: Path) -> None:
    assert weights_variant(str(model_with_variant), torch.float16) == "fp16"
    assert weights_variant(str(model_with_variant), torch.bfloat16) == "fp16"
    assert weights_variant(str(model_with_variant), torch.float32) is None
    assert weights_variant(str(tmp_path), torch.float16) is None


def test_vae_path_replaces_the_vae(tiny: SDXLGenerator, tmp_path: Path) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(99)
        other = _vae()
    other.save_pretrained(tmp_path / "vae", safe_serialization=True)
    replaced = load_generator(
        PipelineConfig(model_path=BUILTIN_TINY, vae_path=str(tmp_path / "vae"), warmup=False)
    )
    loaded = next(replaced.pipeline.vae.parameters())
    assert torch.equal(loaded, next(other.parameters()))
    job = spec()
    assert np.abs(pixels(one(replaced, job, AVATAR)) - pixels(one(tiny, job, AVATAR))).mean() > 1.0


def test_missing_vae_path_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="VAE"):
        load_generator(
            PipelineConfig(
                model_path=BUILTIN_TINY, vae_path=str(tmp_path / "nowhere"), warmup=False
            )
        )


def test_dtype_and_device_reach_every_component() -> None:
    generator = load_generator(
        PipelineConfig(model_path=BUILTIN_TINY, dtype="bfloat16", device="cpu", warmup=False)
    )
    pipe = generator.pipeline
    for module in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2, pipe.image_encoder):
        assert module.dtype == torch.bfloat16
        assert module.device.type == "cpu"
    assert one(generator, spec(), AVATAR).size == (128, 128)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_device_without_a_gpu_is_a_load_error() -> None:
    with pytest.raises(ModelLoadError, match="no CUDA GPU"):
        load_generator(PipelineConfig(model_path=BUILTIN_TINY, device="cuda", warmup=False))


@pytest.mark.parametrize(
    ("version", "minimum", "expected"),
    [
        ("0.42.1", (0, 42), True),
        ("0.42.0.dev0", (0, 42), True),
        ("0.41.9", (0, 42), False),
        ("1.0", (0, 42), True),
        ("4.56.0rc1", (4, 56), True),
        ("4.9.0", (4, 56), False),
    ],
)
def test_library_versions_compare_by_release(
    version: str, minimum: tuple[int, int], expected: bool
) -> None:
    assert _at_least(version, minimum) is expected


def test_a_lora_is_fused_in_float32_then_cast(tiny_lora: Path) -> None:
    from pipeline.engine.reference.adapters import fuse_lora

    half = load_generator(
        PipelineConfig(
            model_path=BUILTIN_TINY, warmup=False, dtype="bfloat16", lora_path=str(tiny_lora)
        )
    )
    # The same base weights, fused in float32 and rounded once.
    reference = build_tiny().pipe.to(dtype=torch.bfloat16).to(dtype=torch.float32)
    fuse_lora(reference, str(tiny_lora), 1.0)
    reference.to(dtype=torch.bfloat16)
    fused = half.pipeline.unet.state_dict()
    expected = reference.unet.state_dict()
    assert half.pipeline.unet.dtype == torch.bfloat16
    changed = [key for key in expected if not torch.equal(fused[key], expected[key])]
    assert changed == []
