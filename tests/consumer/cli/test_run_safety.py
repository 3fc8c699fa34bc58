"""`illustrator run` refuses a missing or malformed SAFETY_CHECKER_PATH: exit 2, one line."""

from __future__ import annotations

from pathlib import Path

from tests.consumer.cli.test_run import FAST_S, _run
from tests.support import safety_checkers
from tests.support.aws import Stack

PREFIX = "illustrator: SAFETY_CHECKER_PATH="


def test_a_missing_checker_folder_is_one_line_and_exit_two(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    code, lines, seconds = _run(
        MODEL_PATH="builtin:tiny", SAFETY_CHECKER_PATH=str(missing), HF_HUB_CACHE=str(tmp_path)
    )
    assert code == 2
    assert lines == [
        f"{PREFIX}{missing}: not a local folder, nor a hub id in the local hub cache {tmp_path}"
    ]
    assert seconds < FAST_S


def test_a_malformed_checker_folder_is_one_line_and_exit_two(tmp_path: Path) -> None:
    folder = safety_checkers.flag_none(tmp_path / "checker")
    (folder / "preprocessor_config.json").unlink()
    code, lines, seconds = _run(MODEL_PATH="builtin:tiny", SAFETY_CHECKER_PATH=str(folder))
    assert code == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{PREFIX}{folder}: preprocessor_config.json is missing")
    assert seconds < FAST_S


def test_an_empty_s3_prefix_exits_two_before_the_model_loads(stack: Stack, tmp_path: Path) -> None:
    uri = f"s3://{stack.bucket}/models/no-checker"
    code, lines, _ = _run(
        MODEL_PATH="builtin:tiny",
        SAFETY_CHECKER_PATH=uri,
        MODEL_CACHE_DIR=str(tmp_path),
        **stack.environment(),
    )
    assert code == 2
    assert lines[-1].startswith(f"{PREFIX}{uri}: no objects under {uri}")
    # Refused before the model was built.
    assert not any("pipeline_ready" in line for line in lines)


def test_an_s3_folder_with_bad_weights_exits_two(stack: Stack, tmp_path: Path) -> None:
    folder = safety_checkers.flag_none(tmp_path / "checker")
    (folder / "model.safetensors").write_bytes(b"broken")
    uri = stack.upload_folder(folder, "checker")
    code, lines, _ = _run(
        MODEL_PATH="builtin:tiny",
        SAFETY_CHECKER_PATH=uri,
        MODEL_CACHE_DIR=str(tmp_path / "cache"),
        **stack.environment(),
    )
    assert code == 2
    assert "cannot load the safety checker" in lines[-1]
    assert lines[-1].startswith(f"{PREFIX}{uri}: ")
    assert not any("pipeline_ready" in line for line in lines)
