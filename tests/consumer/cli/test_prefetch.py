"""`illustrator prefetch` against moto's S3: every file the settings name, in the cache."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from consumer.cli import main as cli
from pipeline.builtin.tiny import save_tiny
from tests.support.aws import Stack
from tests.support.downloads import files_under


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny model and its IP-Adapter, saved as folders."""
    return save_tiny(tmp_path_factory.mktemp("tiny"))


async def _prefetch() -> int:
    return await asyncio.to_thread(cli.main, ["prefetch"])


async def test_prefetch_fills_the_cache_once(
    stack: Stack,
    tmp_path: Path,
    tiny_model: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, ip_adapter = tiny_model
    monkeypatch.setenv("MODEL_S3_PATH", stack.upload_folder(model, "models/tiny"))
    monkeypatch.setenv("IP_ADAPTER_PATH", stack.upload_folder(ip_adapter, "models/ip"))
    monkeypatch.setenv("MODEL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SAFETY_CHECKER_PATH", "")

    assert await _prefetch() == 0

    cache = tmp_path / "cache"
    # Every file of the model and of the adapter is in the cache.
    names = {Path(name).name for name in files_under(cache)}
    assert {p.name for p in model.rglob("*") if p.is_file()} <= names
    assert "ip-adapter_sdxl.safetensors" in names
    # A second run finds everything in place and downloads nothing.
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}
    assert await _prefetch() == 0
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()} == before


async def test_prefetch_of_a_missing_model_is_a_configuration_error(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODEL_S3_PATH", f"s3://{stack.bucket}/models/absent/")
    monkeypatch.setenv("MODEL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SAFETY_CHECKER_PATH", "")

    assert await _prefetch() == 2
