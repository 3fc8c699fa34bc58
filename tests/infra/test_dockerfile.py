"""The container recipe: hadolint clean, and the conventions operations rely on."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from consumer.cli import main as cli
from consumer.clock import SystemClock
from consumer.delivery.worker_state import StatusBoard
from consumer.metrics import Metrics
from consumer.service.sidecar import Sidecar

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
    assert [args for word, args in instructions if word == "FROM"] == ["${BASE}"]
    # The base is an argument (make image gives a local Debian); its default
    # is the CUDA runtime, pinned by digest as well as by tag.
    arguments = dict(a.partition("=")[::2] for w, a in instructions if w == "ARG")
    pinned = r"nvidia/cuda:1[2-9]\.[\d.]+-cudnn-runtime-ubuntu24\.04@sha256:[0-9a-f]{64}"
    assert re.fullmatch(pinned, arguments["BASE"]), arguments["BASE"]
    # Ubuntu 24.04's own Python; Ubuntu 22.04's python3.11 is 3.11.0rc1,
    # under which torch cannot be imported.
    assert arguments["PYTHON"] == "python3.12"
    users = [args for word, args in instructions if word == "USER"]
    assert users
    assert users[-1].split(":")[0] not in {"0", "root"}
    assert ("ENTRYPOINT", '["illustrator"]') in instructions
    assert ("CMD", '["run"]') in instructions


def test_health_check_and_model_cache_volume() -> None:
    instructions = dict(_instructions())
    assert instructions["HEALTHCHECK"].endswith('CMD ["illustrator", "health", "--live"]')
    assert json.loads(instructions["VOLUME"]) == ["/var/cache/illustrator"]


def _health_check() -> list[str]:
    """The HEALTHCHECK's command, as the container runs it."""
    arguments = dict(_instructions())["HEALTHCHECK"]
    return list(json.loads(arguments.split(" CMD ", 1)[1]))


async def test_the_health_check_passes_while_paused_or_draining_and_fails_when_broken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Run against a real sidecar: an outage or a drain is no reason to mark
    the container unhealthy (``/health`` is 503 then); a fatal error is."""
    out: list[str] = []
    board = StatusBoard(SystemClock(), "w")
    board.loaded("m")
    board.loop_started()
    board.paused_by = lambda: out
    sidecar = Sidecar(board, Metrics(), "127.0.0.1", 0)
    monkeypatch.setenv("HEALTH_PORT", str(await sidecar.start()))
    command = _health_check()
    assert command[0] == "illustrator"

    async def check() -> int:
        return await asyncio.to_thread(cli.main, command[1:])

    try:
        assert await check() == 0
        out.append("s3")
        assert board.health().status_code == 503
        assert await check() == 0
        out.clear()
        board.drain("scale-in")
        assert await check() == 0
        board.fail("the GPU is wedged")
        assert await check() == 1
    finally:
        await sidecar.stop()


def test_installs_with_the_pinned_constraints() -> None:
    runs = " ".join(args for word, args in _instructions() if word == "RUN")
    assert "-c constraints.txt" in runs
    # torch's version comes from pyproject and the constraints only.
    assert re.search(r"(?<![\w-])torch(?![\w-])", runs) is None
    assert "'.[gpu]'" in runs


def test_the_image_can_compile_and_keeps_its_kernels_on_the_volume() -> None:
    instructions = _instructions()
    packages = " ".join(args for word, args in instructions if word == "RUN").split()
    # One argument names the Python packages on Ubuntu (the CUDA base) and
    # Debian 12 (make image) alike.
    assert {"g++", '"$PYTHON"', '"$PYTHON-dev"'} <= set(packages)
    environment = dict(
        pair.split("=", 1) for word, args in instructions if word == "ENV" for pair in args.split()
    )
    volume = json.loads(dict(instructions)["VOLUME"])[0]
    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "MODEL_CACHE_DIR", "HF_HOME"):
        assert environment[name].startswith(volume), name


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
