"""The container recipe: hadolint clean, and the conventions operations rely on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HADOLINT = Path(sys.executable).parent / "hadolint"


def _instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    pairs = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            pairs.append((word.upper(), " ".join(rest.split())))
    return pairs


def test_hadolint_is_clean() -> None:
    result = subprocess.run(
        [str(HADOLINT), "--no-color", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_runs_the_consumer_as_a_non_root_user_on_a_cuda_base() -> None:
    instructions = _instructions()
    base = [args for word, args in instructions if word == "FROM"]
    assert len(base) == 1
    assert base[0].startswith("nvidia/cuda:12.")
    assert "-cudnn-runtime-" in base[0]
    users = [args for word, args in instructions if word == "USER"]
    assert users
    assert users[-1].split(":")[0] not in {"0", "root"}
    assert ("ENTRYPOINT", '["illustrator"]') in instructions
    assert ("CMD", '["run"]') in instructions


def test_health_check_and_model_cache_volume() -> None:
    instructions = dict(_instructions())
    assert instructions["HEALTHCHECK"].endswith('CMD ["illustrator", "health"]')
    assert json.loads(instructions["VOLUME"]) == ["/var/cache/illustrator"]


def test_installs_with_the_pinned_constraints() -> None:
    runs = " ".join(args for word, args in _instructions() if word == "RUN")
    assert "-c constraints.txt" in runs
    assert "torch" not in runs  # the version comes from pyproject and the constraints only


def test_build_context_is_an_allow_list() -> None:
    lines = [
        line
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "constraints.txt", "README.md", "consumer", "pipeline"}


def test_the_gpu_allocator_uses_expandable_segments() -> None:
    environment = " ".join(args for word, args in _instructions() if word == "ENV")
    assert "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True" in environment.split()
