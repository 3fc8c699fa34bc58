"""The settings-to-pipeline bridge: derived by field name, unset as None."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from consumer.aws.model_sources import _RESOLVED, pipeline_settings
from consumer.settings import Settings
from pipeline.api.config import PipelineConfig


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
    for name in ("device", "dtype", "scheduler", "torch_compile_mode", "vae_tiling_pixels"):
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
        ("vae_tiling_pixels", 1_048_576),
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
