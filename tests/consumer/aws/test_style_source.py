"""The style catalog from S3 (moto's server) or disk: fetched, checked, reloaded whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from consumer.aws.style_source import StyleShelf
from consumer.errors import ConfigError
from consumer.metrics import Metrics
from pipeline.api.lora_files import StyleSlot, file_digest
from tests.support.aws import Stack
from tests.support.helpers import settings
from tests.support.lora_headers import diffusers_lora, kohya_lora

CATALOG = """
default: ink
styles:
  ink: {lora: loras/ink.safetensors, style_prompt: ink}
  wash: {lora: loras/wash.safetensors, lora_scale: 0.5}
  plain: {style_prompt: watercolour}
"""


def _upload_lora(stack: Stack, tmp_path: Path, key: str, **options: Any) -> Path:
    path = diffusers_lora(tmp_path / Path(key).name, **options)
    stack.put(key, path.read_bytes())
    return path


def _shelf(stack: Stack, tmp_path: Path, catalog: str = CATALOG) -> StyleShelf:
    uri = stack.put("models/styles.yaml", catalog.encode())
    shelf = StyleShelf(settings(styles_path=uri, model_cache_dir=str(tmp_path / "cache")))
    shelf.metrics = Metrics()
    return shelf


def _reloads(shelf: StyleShelf, outcome: str) -> float:
    assert shelf.metrics is not None
    return shelf.metrics.style_reloads.labels(outcome=outcome)._value.get()


async def test_a_catalog_on_s3_brings_its_loras_through_the_artefact_cache(
    stack: Stack, tmp_path: Path
) -> None:
    ink = _upload_lora(stack, tmp_path, "models/loras/ink.safetensors", rank=16)
    _upload_lora(stack, tmp_path, "models/loras/wash.safetensors", kinds=("to_q", "ff.net.2"))
    shelf = _shelf(stack, tmp_path)
    book = await shelf.load()
    assert book.names == ["ink", "plain", "wash"]
    local = Path(book.loras["ink"].path)
    assert local.is_relative_to(tmp_path / "cache")
    assert file_digest(local) == file_digest(ink)
    assert book.loras["ink"].digest == file_digest(ink)
    assert book.loras["ink"].source == f"s3://{stack.bucket}/models/loras/ink.safetensors"
    assert "plain" not in book.loras
    assert shelf.slot == StyleSlot(16, frozenset({"to_q", "to_k", "to_v", "to_out.0", "ff.net.2"}))
    fields = shelf.pipeline_fields()
    assert fields["style_slot"] == shelf.slot
    assert [name for name, _, _ in fields["style_loras"]] == ["ink", "wash"]


@pytest.mark.parametrize(
    ("wash", "reason"),
    [
        (None, "style 'wash': LoRA s3://.*/models/loras/wash.safetensors does not exist"),
        ({"text_encoder": True}, "style 'wash': it has 2 text-encoder tensors"),
        ({"kinds": ("conv1",)}, "style 'wash': it targets conv1; a style's LoRA may target only"),
    ],
)
async def test_a_catalog_with_a_style_that_cannot_work_is_refused_naming_it(
    stack: Stack, tmp_path: Path, wash: dict[str, object] | None, reason: str
) -> None:
    _upload_lora(stack, tmp_path, "models/loras/ink.safetensors")
    if wash is not None:
        _upload_lora(stack, tmp_path, "models/loras/wash.safetensors", **wash)
    with pytest.raises(ConfigError, match=f"STYLES_PATH=s3://.*/styles.yaml: {reason}"):
        await _shelf(stack, tmp_path).load()


async def test_a_missing_or_unparseable_catalog_is_refused(stack: Stack, tmp_path: Path) -> None:
    missing = StyleShelf(settings(styles_path=f"s3://{stack.bucket}/models/none.yaml"))
    with pytest.raises(ConfigError, match=r"STYLES_PATH=s3://.*none\.yaml: .*does not exist"):
        await missing.load()
    with pytest.raises(ConfigError, match=r"STYLES_PATH=s3://.*styles\.yaml: not YAML"):
        await _shelf(stack, tmp_path, "styles: [").load()


async def test_a_local_catalog_finds_its_loras_beside_it(tmp_path: Path) -> None:
    diffusers_lora(tmp_path / "loras" / "ink.safetensors")
    kohya_lora(tmp_path / "loras" / "wash.safetensors", ("mid_block_attentions_0_proj_in",))
    (tmp_path / "styles.yaml").write_text(CATALOG)
    book = await StyleShelf(settings(styles_path=str(tmp_path / "styles.yaml"))).load()
    assert book.loras["wash"].path == str(tmp_path / "loras" / "wash.safetensors")
    assert book.loras["wash"].facts.kinds == {"proj_in"}


async def test_a_valid_reload_is_swapped_in_whole(stack: Stack, tmp_path: Path) -> None:
    _upload_lora(stack, tmp_path, "models/loras/ink.safetensors", rank=16)
    _upload_lora(stack, tmp_path, "models/loras/wash.safetensors")
    shelf = _shelf(stack, tmp_path)
    first = await shelf.load()
    # A new file under the same key (a new ETag), and a new style within the slot.
    changed = _upload_lora(stack, tmp_path, "models/loras/wash.safetensors", rank=8, blocks=3)
    _upload_lora(stack, tmp_path, "models/loras/oil.safetensors", kinds=("to_q",), rank=16)
    stack.put("models/styles.yaml", (CATALOG + "  oil: {lora: loras/oil.safetensors}\n").encode())
    assert await shelf.reload() is True
    assert shelf.book is not None
    assert shelf.book.names == ["ink", "oil", "plain", "wash"]
    assert shelf.book.loras["wash"].digest == file_digest(changed) != first.loras["wash"].digest
    assert (_reloads(shelf, "applied"), _reloads(shelf, "refused")) == (1, 0)


@pytest.mark.parametrize(
    ("catalog", "oil", "reason"),
    [
        ("styles: {ink: {lora: [}", None, "not YAML"),
        (CATALOG + "  oil: {lora: loras/oil.safetensors}\n", {"rank": 32}, "over the slot's 16"),
        (
            CATALOG + "  oil: {lora: loras/oil.safetensors}\n",
            {"kinds": ("ff.net.2",)},
            "it targets ff.net.2, outside the slot's layers",
        ),
        (
            CATALOG + "  oil: {lora: loras/oil.safetensors}\n",
            {"text_encoder": True},
            "text-encoder",
        ),
        (CATALOG + "  oil: {lora: loras/none.safetensors}\n", None, "does not exist"),
    ],
)
async def test_an_invalid_reload_keeps_the_old_catalog(
    stack: Stack, tmp_path: Path, catalog: str, oil: dict[str, object] | None, reason: str
) -> None:
    _upload_lora(stack, tmp_path, "models/loras/ink.safetensors", rank=16)
    _upload_lora(stack, tmp_path, "models/loras/wash.safetensors")
    shelf = _shelf(stack, tmp_path)
    old = await shelf.load()
    if oil is not None:
        _upload_lora(stack, tmp_path, "models/loras/oil.safetensors", **oil)
    stack.put("models/styles.yaml", catalog.encode())
    with capture_logs() as logs:
        assert await shelf.reload() is False
    assert shelf.book is old
    assert (_reloads(shelf, "applied"), _reloads(shelf, "refused")) == (0, 1)
    [line] = [entry for entry in logs if entry["event"] == "styles_reload_refused"]
    assert reason in line["error"]


async def test_without_a_lora_at_start_a_reload_may_add_none(tmp_path: Path) -> None:
    catalog = tmp_path / "styles.yaml"
    catalog.write_text("styles: {plain: {style_prompt: watercolour}}\n")
    shelf = StyleShelf(settings(styles_path=str(catalog)))
    await shelf.load()
    assert shelf.slot is None
    assert shelf.pipeline_fields()["style_slot"] is None
    diffusers_lora(tmp_path / "ink.safetensors")
    catalog.write_text("styles: {ink: {lora: ink.safetensors}}\n")
    with capture_logs() as logs:
        assert await shelf.reload() is False
    assert "this worker has no LoRA slot" in logs[-1]["error"]


async def test_a_reload_before_the_first_read_leaves_it_to_the_first(tmp_path: Path) -> None:
    diffusers_lora(tmp_path / "ink.safetensors")
    (tmp_path / "styles.yaml").write_text("styles: {ink: {lora: ink.safetensors}}\n")
    shelf = StyleShelf(settings(styles_path=str(tmp_path / "styles.yaml")))
    assert await shelf.reload() is False
    assert shelf.book is None
    await shelf.load()
    assert shelf.slot is not None
