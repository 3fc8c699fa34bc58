"""`illustrator demo` (what `make demo` runs), in this process."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from consumer.cli.main import main

ROOT = Path(__file__).resolve().parents[3]


def test_demo_runs_both_jobs_and_saves_the_pictures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODEL_PATH", raising=False)
    # `cp env.example .env` as env.example suggests: its MODEL_PATH names SDXL,
    # which the demo must not pick up from the file.
    shutil.copy(ROOT / "env.example", tmp_path / ".env")
    monkeypatch.chdir(tmp_path)
    output = tmp_path / "demo-output"
    assert main(["demo", "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "both jobs succeeded" in printed
    assert printed.count('"status": "succeeded"') == 2
    assert '"model": "builtin:tiny"' in printed
    # It says what the pictures are and where they went.
    assert "random weights" in printed
    assert "draws noise" in printed
    assert f"pictures and their inputs: {output.resolve()}" in printed
    for name in ("memory_demo-memory-1.png", "subject_demo-subject-1.png"):
        with Image.open(output / name) as picture:
            assert picture.format == "PNG"
            assert picture.size == (128, 128)
    assert (output / "input-avatar.png").exists()
    assert (output / "input-photo.jpg").exists()
    # The embedded endpoint is gone from the environment once the demo ends.
    assert "AWS_ENDPOINT_URL" not in os.environ


def test_the_model_option_wins_over_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODEL_PATH", "builtin:tiny")
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--model", "builtin:blank", "--output", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert printed.count('"model": "builtin:blank"') == 2
    assert "builtin:blank loads no model" in printed
