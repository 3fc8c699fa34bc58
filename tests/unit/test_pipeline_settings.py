"""The settings-to-pipeline bridge: derived by field name, unset as None."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from consumer.aws.model_sources import _RESOLVED, pipeline_settings
from consumer.settings import Settings
from pipeline.api.batch import largest_requests
from pipeline.api.config import PipelineConfig, compile_sizes


def settings(**values: typing.Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_every_pipeline_field_is_a_setting_or_resolved_from_one() -> None:
    # A new PipelineConfig field without a setting of its name would silently
    # keep its default in production.
    unmatched = {
        field.name
        for field in dataclasses.fields(PipelineConfig)
        if field.name not in Settings.model_fields and field.name not in _RESOLVED
    }
    assert unmatched == set()


def test_unset_settings_become_none_where_the_pipeline_defaults_to_none() -> None:
    values = pipeline_settings(settings())
    for name in ("device", "dtype", "scheduler", "torch_compile_mode", "torch_compile_sizes"):
        assert values[name] is None, name
    assert values["subject_ip_adapter_weight_name"] is None
    assert not _RESOLVED & set(values)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("device", "cpu"),
        ("dtype", "float16"),
        ("scheduler", "DDIMScheduler"),
        ("torch_compile_mode", "max-autotune"),
        ("vae_tiling_pixels", 2_097_152),
        ("vae_tiling_pixels", 0),
        ("torch_compile_sizes", "1024x1024,1152x896"),
        ("torch_compile_vae", True),
        ("torch_compile_regional", True),
        ("max_batch_pixels", 1024 * 1024),
        ("subject_ip_adapter_weight_name", "face.safetensors"),
        ("timestep_spacing", "leading"),
        ("lora_scale", 0.5),
        ("ip_adapter_subfolder", "models"),
        ("warmup", False),
    ],
)
def test_set_values_pass_through_by_name(name: str, value: object) -> None:
    assert pipeline_settings(settings(**{name: value}))[name] == value


def test_the_settings_defaults_are_the_pipelines() -> None:
    values = pipeline_settings(settings())
    config = PipelineConfig(model_path="x", **values)
    assert config == PipelineConfig(model_path="x")


def test_allowed_values_come_from_the_pipeline() -> None:
    with pytest.raises(ValueError, match="timestep_spacing"):
        settings(timestep_spacing="even")
    with pytest.raises(ValueError, match="device"):
        settings(device="tpu")


def test_events_name_the_weights_that_drew_the_picture_lora_included() -> None:
    from consumer.aws.model_sources import reported_model

    base = {"model_path": "stabilityai/stable-diffusion-xl-base-1.0"}
    assert reported_model(Settings(**base)) == "stabilityai/stable-diffusion-xl-base-1.0"
    s3 = {**base, "model_s3_path": "s3://b/models/sdxl-v7/"}
    assert reported_model(Settings(**s3)) == "s3://b/models/sdxl-v7/"
    lora = {**s3, "enable_lora": True, "lora_path": "s3://b/models/loras/v3.safetensors"}
    assert reported_model(Settings(**lora, lora_scale=0.8)) == (
        "s3://b/models/sdxl-v7/ + LoRA s3://b/models/loras/v3.safetensors (scale 0.8)"
    )
    # A LoRA named but not enabled draws nothing.
    assert reported_model(Settings(**{**lora, "enable_lora": False})) == "s3://b/models/sdxl-v7/"


def test_pictures_above_a_million_pixels_decode_in_tiles_unless_zero_says_never() -> None:
    assert settings().vae_tiling_pixels == 1024 * 1024
    config = PipelineConfig(model_path="x", **pipeline_settings(settings(vae_tiling_pixels=0)))
    assert config.tiling_threshold is None


@pytest.mark.parametrize(
    ("value", "sizes"),
    [
        ("", ()),
        ("1024x1024", ((1024, 1024),)),
        (" 1152x896 , 1024X1024,1152x896", ((1152, 896), (1024, 1024))),
    ],
)
def test_compile_sizes_are_read_from_one_list(
    value: str, sizes: tuple[tuple[int, int], ...]
) -> None:
    assert compile_sizes(value) == sizes
    assert settings(torch_compile_sizes=value).torch_compile_sizes == value


@pytest.mark.parametrize("value", ["1024", "1000x1024", "4096x64", "axb"])
def test_a_compile_size_a_request_could_not_ask_for_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="compile size"):
        compile_sizes(value)
    with pytest.raises(ValueError, match="torch_compile_sizes"):
        settings(torch_compile_sizes=value)


@pytest.mark.parametrize(
    ("native", "max_pixels", "cases"),
    [
        # The defaults: four native pictures, and one of the largest side.
        ((1024, 1024), 4 * 1024 * 1024, [(4, 1024, 1024), (1, 2048, 2048)]),
        ((1024, 1024), 2 * 1024 * 1024, [(2, 1024, 1024), (1, 1408, 1408)]),
        # A single native picture is also the largest square.
        ((1024, 1024), 1024 * 1024, [(1, 1024, 1024)]),
        ((1024, 1024), 512 * 512, [(1, 512, 512)]),
        # Never more than four pictures, never a side past 2048.
        ((128, 128), 64 * 1024 * 1024, [(4, 128, 128), (1, 2048, 2048)]),
    ],
)
def test_the_largest_requests_the_limits_allow(
    native: tuple[int, int], max_pixels: int, cases: list[tuple[int, int, int]]
) -> None:
    assert largest_requests(native, max_pixels) == cases
