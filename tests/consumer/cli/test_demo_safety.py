"""`illustrator demo` honours SAFETY_CHECKER_PATH: flagged pictures are never saved."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.cli.main import main
from tests.support import safety_checkers


def test_the_demo_runs_with_a_checker_and_saves_no_flagged_picture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    checker = safety_checkers.flag_all(tmp_path / "checker")
    monkeypatch.setenv("SAFETY_CHECKER_PATH", str(checker))
    monkeypatch.setenv("SAFETY_MAX_REDRAWS", "1")
    monkeypatch.chdir(tmp_path)
    output = tmp_path / "out"
    assert main(["demo", "--model", "builtin:blank", "--output", str(output)]) != 0
    printed = capsys.readouterr().out
    assert printed.count('"code": "content_filtered"') == 2
    assert "FAILED" in printed
    # Only the inputs the demo uploaded; no generated picture.
    assert sorted(p.name for p in output.iterdir()) == ["input-avatar.png", "input-photo.jpg"]
