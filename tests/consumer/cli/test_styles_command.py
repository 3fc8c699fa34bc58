"""`illustrator styles check`, and the style options of `submit` and `sandbox`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consumer.cli import main as cli
from pipeline.api.lora_files import file_digest
from tests.support.aws import Stack
from tests.support.lora_headers import diffusers_lora, kohya_lora


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    diffusers_lora(tmp_path / "ink.safetensors", rank=16, blocks=3)
    diffusers_lora(tmp_path / "wash.safetensors", kinds=("to_q", "ff.net.2"), rank=4)
    kohya_lora(tmp_path / "oil.safetensors", ("mid_block_attentions_0_proj_out",), rank=64)
    diffusers_lora(tmp_path / "text.safetensors", text_encoder=True)
    return tmp_path


def _catalog(folder: Path, name: str, styles: dict[str, str | None]) -> Path:
    lines = ["default: ink", "styles:"]
    for style, lora in styles.items():
        lines.append(f"  {style}: {{lora: {lora}}}" if lora else f"  {style}: {{}}")
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_valid_catalog_is_a_table_of_its_styles_and_the_slot_it_makes(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    styles = {"ink": "ink.safetensors", "wash": "wash.safetensors", "plain": None}
    catalog = _catalog(folder, "good.yaml", styles)
    assert cli.main(["styles", "check", str(catalog)]) == 0
    out = capsys.readouterr().out.splitlines()
    header = ["STYLE", "LORA", "RANK", "SIZE", "DTYPE", "LAYERS", "DIGEST", "STATUS"]
    assert out[0].split() == header
    rows = {line.split()[0]: line.split() for line in out[1:4]}
    digest = file_digest(folder / "ink.safetensors")
    size = (folder / "ink.safetensors").stat().st_size / 1024
    assert rows["ink"] == [
        "ink",
        "(default)",
        "16",
        f"{size:.1f}",
        "KiB",
        "F16",
        "to_k,to_out.0,to_q,to_v",
        digest,
        "ok",
    ]
    assert rows["wash"][1:2] == ["4"]
    assert rows["wash"][5:6] == ["ff.net.2,to_q"]
    assert rows["plain"] == ["plain", "-", "-", "-", "-", "-", "ok"]
    assert out[4:] == [
        "slot: rank 16, layers ff.net.2, to_k, to_out.0, to_q, to_v",
        "3 styles, 0 refused",
    ]


def test_a_catalog_with_styles_that_cannot_work_exits_two_saying_why(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    styles = {"ink": "ink.safetensors", "text": "text.safetensors", "gone": "gone.safetensors"}
    assert cli.main(["styles", "check", str(_catalog(folder, "bad.yaml", styles))]) == 2
    out = capsys.readouterr().out
    assert "style 'text': it has 2 text-encoder tensors" in out
    assert f"style 'gone': LoRA {folder}/gone.safetensors does not exist" in out
    assert out.rstrip().endswith("3 styles, 2 refused")


def test_a_reload_is_checked_against_the_slot_of_the_running_catalog(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    running = _catalog(folder, "running.yaml", {"ink": "ink.safetensors"})
    reload = _catalog(folder, "new.yaml", {"ink": "ink.safetensors", "oil": "oil.safetensors"})
    assert cli.main(["styles", "check", str(reload)]) == 0
    capsys.readouterr()
    assert cli.main(["styles", "check", str(reload), "--running", str(running)]) == 2
    out = capsys.readouterr().out
    assert "style 'oil': it targets proj_out, outside the slot's layers" in out
    assert "slot of the running workers: rank 16, layers to_k, to_out.0, to_q, to_v" in out


def test_an_unreadable_catalog_is_one_line_and_exit_two(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (folder / "broken.yaml").write_text("styles: [")
    assert cli.main(["styles", "check", str(folder / "broken.yaml")]) == 2
    assert capsys.readouterr().err.startswith(f"illustrator: {folder}/broken.yaml: not YAML")


def test_submit_sends_the_style_and_its_strength(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["submit", "memory", "--user-id", "u1", "--prompt", "a walk", "--job-id", "st-1"]
    assert cli.main([*argv, "--style", "ink", "--style-strength", "0.7"]) == 0
    [message] = stack.receive_all(stack.queue_url)
    body = json.loads(message["Body"])
    assert (body["style"], body["style_strength"]) == ("ink", 0.7)
    assert cli.main([*argv, "--style", "ink", "--style-strength", "2"]) == 2
    assert "style_strength" in capsys.readouterr().err


def test_the_sandbox_banner_shows_how_to_ask_for_a_style(folder: Path) -> None:
    from consumer.cli.sandbox import _style_lines
    from tests.support.helpers import settings

    assert _style_lines(settings()) == []
    catalog = _catalog(folder, "good.yaml", {"ink": "ink.safetensors"})
    lines = _style_lines(settings(styles_path=str(catalog)))
    assert any("--style NAME" in line for line in lines)
