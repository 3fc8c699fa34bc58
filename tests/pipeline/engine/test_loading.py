"""The tiny model saved to disk and read back through the real loading code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pipeline.api.config import BUILTIN_TINY, PipelineConfig
from pipeline.api.errors import ModelLoadError
from pipeline.builtin.tiny import build_tiny
from pipeline.engine.generator import SDXLGenerator
from pipeline.engine.untyped import diffusers
from pipeline.engine.weights.checkpoints import WeightsKind, classify_keys, weights_kind
from pipeline.engine.weights.loading import split_hub_path
from tests.support.assets import (
    draw_alike,
    load_generator,
    load_saved,
    make_finetuned_unet,
    noise_picture,
    one,
    pixels,
)
from tests.support.specs import spec

AVATAR = noise_picture(1)


def test_local_folder_draws_what_builtin_tiny_draws(
    tiny: SDXLGenerator, tiny_on_disk: tuple[Path, Path]
) -> None:
    model_dir, ip_dir = tiny_on_disk
    loaded = load_saved(model_dir, ip_dir)
    assert loaded.model_name == str(model_dir)
    assert loaded.native_size == (128, 128)
    assert draw_alike(loaded, tiny, spec(), AVATAR)


def test_separate_image_encoder_path(tiny: SDXLGenerator, tiny_on_disk: tuple[Path, Path]) -> None:
    model_dir, ip_dir = tiny_on_disk
    encoder = ip_dir / "sdxl_models" / "image_encoder"
    loaded = load_saved(model_dir, ip_dir, image_encoder_path=str(encoder))
    assert draw_alike(loaded, tiny, spec(), AVATAR)


def test_unet_weights_file_is_loaded_over_the_base(
    tiny: SDXLGenerator, tiny_on_disk: tuple[Path, Path], tmp_path: Path
) -> None:
    model_dir, ip_dir = tiny_on_disk
    weights = make_finetuned_unet(tmp_path / "checkpoint-1.safetensors")
    assert weights_kind(weights) is WeightsKind.UNET
    from_folder = load_saved(model_dir, ip_dir, weights_file=str(weights))
    over_builtin = load_generator(
        PipelineConfig(model_path=BUILTIN_TINY, weights_file=str(weights), warmup=False)
    )
    job = spec()
    assert draw_alike(from_folder, over_builtin, job, AVATAR)
    tuned = pixels(one(from_folder, job, AVATAR))
    assert np.abs(tuned - pixels(one(tiny, job, AVATAR))).mean() > 1.0


def test_missing_model_is_a_load_error_without_network(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="local hub cache"):
        load_generator(PipelineConfig(model_path=str(tmp_path / "nowhere"), warmup=False))


def test_uncached_hub_id_is_not_fetched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelLoadError, match=r"stable-diffusion-xl-base-1\.0"):
        load_generator(
            PipelineConfig(model_path="stabilityai/stable-diffusion-xl-base-1.0", warmup=False)
        )


def test_missing_ip_adapter_is_a_load_error(
    tiny_on_disk: tuple[Path, Path], tmp_path: Path
) -> None:
    model_dir, _ = tiny_on_disk
    with pytest.raises(ModelLoadError, match="image encoder"):
        load_generator(
            PipelineConfig(model_path=str(model_dir), ip_adapter_path=str(tmp_path), warmup=False)
        )


def test_weights_kinds_are_told_apart_by_keys() -> None:
    unet = ["conv_in.weight", "time_embedding.linear_1.weight", "down_blocks.0.resnets.0.x"]
    assert classify_keys(unet) is WeightsKind.UNET
    assert classify_keys(f"unet.{key}" for key in unet) is WeightsKind.UNET
    checkpoint = [
        "model.diffusion_model.input_blocks.0.0.weight",
        "first_stage_model.encoder.conv_in.weight",
        "conditioner.embedders.0.transformer.text_model.embeddings.position_ids",
    ]
    assert classify_keys(checkpoint) is WeightsKind.CHECKPOINT
    with pytest.raises(ModelLoadError, match="neither"):
        classify_keys(["lora_unet_down_blocks_0.alpha"])


def test_a_file_that_is_not_safetensors_is_a_load_error(tmp_path: Path) -> None:
    bogus = tmp_path / "weights.safetensors"
    bogus.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="cannot read weights file"):
        weights_kind(bogus)


def test_encoder_locations_inside_hub_repositories(tmp_path: Path) -> None:
    assert split_hub_path("h94/IP-Adapter/models/image_encoder") == (
        "h94/IP-Adapter",
        "models/image_encoder",
    )
    assert split_hub_path("org/encoder") == ("org/encoder", "")
    assert split_hub_path(str(tmp_path)) == (str(tmp_path), "")


def test_whole_checkpoint_is_read_with_the_base_models_config(
    tiny_on_disk: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir, ip_dir = tiny_on_disk
    checkpoint = tmp_path / "merged.safetensors"
    names = [
        "model.diffusion_model.input_blocks.0.0.weight",
        "first_stage_model.encoder.conv_in.weight",
        "conditioner.embedders.1.model.ln_final.weight",
    ]
    save_file({name: torch.zeros(1) for name in names}, str(checkpoint))
    calls: list[tuple[str, dict[str, Any]]] = []

    def from_single_file(path: str, **kwargs: Any) -> Any:
        calls.append((path, kwargs))
        return build_tiny().pipe

    monkeypatch.setattr(
        diffusers.StableDiffusionXLPipeline, "from_single_file", staticmethod(from_single_file)
    )
    loaded = load_saved(model_dir, ip_dir, weights_file=str(checkpoint))
    [(path, kwargs)] = calls
    assert path == str(checkpoint)
    assert kwargs["config"] == str(model_dir)
    assert kwargs["local_files_only"] is True
    assert one(loaded, spec(), AVATAR).size == (128, 128)
