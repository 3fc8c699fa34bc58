"""Fixtures of the pipeline tests: the tiny model, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.api.config import BUILTIN_TINY, PipelineConfig
from pipeline.builtin.tiny import save_tiny
from pipeline.engine.generator import SDXLGenerator
from tests.support.assets import load_generator, make_tiny_lora


@pytest.fixture(scope="session")
def tiny() -> SDXLGenerator:
    """The loaded `builtin:tiny` generator, shared by the tests that only generate."""
    return load_generator(PipelineConfig(model_path=BUILTIN_TINY, warmup=False))


@pytest.fixture(scope="session")
def tiny_on_disk(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny model saved as (diffusers folder, IP-Adapter folder)."""
    return save_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_lora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA file for the tiny UNet."""
    return make_tiny_lora(tmp_path_factory.mktemp("lora") / "tiny_lora.safetensors")
