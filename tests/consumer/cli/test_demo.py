"""`illustrator demo` (what `make demo` runs), in this process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from consumer.cli.main import main


def test_demo_runs_both_jobs_and_saves_the_pictures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODEL_PATH", raising=False)
    output = tmp_path / "demo-output"
    assert main(["demo", "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "both jobs succeeded" in printed
    assert printed.count('"status": "succeeded"') == 2
    assert '"model": "builtin:tiny"' in printed
    for name in ("memory_demo-memory-1.png", "subject_demo-subject-1.png"):
        with Image.open(output / name) as picture:
            assert picture.format == "PNG"
            assert picture.size == (128, 128)
    assert (output / "input-avatar.png").exists()
    assert (output / "input-photo.jpg").exists()
    # The embedded endpoint is gone from the environment once the demo ends.
    assert "AWS_ENDPOINT_URL" not in os.environ
