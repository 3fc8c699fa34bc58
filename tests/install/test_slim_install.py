"""An operator's install: `pip install .` without the pipeline's libraries.

A throwaway virtual environment gets the project alone (under
constraints.txt); its `illustrator` then runs each operator command against
moto's server on loopback: `schema`, `cancel`, `submit --wait` with a worker
of the same install (`run`, builtin:blank) and `health` against that
worker's sidecar, `dlq list` and `dlq redrive`. `run` with a model that
needs the pipeline says which extra to install.

The install takes about a minute: ``make test-slim`` runs this layer
(``SLIM_INSTALL=1``), and ``.ci/run`` calls it; ``make test`` skips it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.aws import Stack

ROOT = Path(__file__).resolve().parents[2]
# Import names of the pipeline's libraries (the `gpu` extra) and their helpers.
HEAVY = ("torch", "diffusers", "transformers", "accelerate", "peft", "safetensors")
HEAVY += ("huggingface_hub", "open_clip")
OPERATOR_COMMANDS = ("dlq", "cancel", "submit", "health", "schema", "run")

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("SLIM_INSTALL") != "1",
        reason="installs the project into a fresh venv (about a minute): make test-slim",
    ),
    pytest.mark.timeout(600),
]


@pytest.fixture(scope="module")
def slim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `bin` folder of a fresh venv with `pip install .` of this checkout."""
    home = tmp_path_factory.mktemp("slim")
    venv.create(home / "venv", with_pip=True)
    bin_dir = home / "venv" / "bin"
    # A copy of the sources, so the build leaves nothing in the checkout.
    source = home / "src"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(".venv", ".git", "*.egg-info", "build", "__pycache__"),
    )
    pip = [str(bin_dir / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "-c", str(ROOT / "constraints.txt"), str(source)], check=True)
    return bin_dir


def _env(stack: Stack, **extra: str) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    environment.update(stack.environment())
    environment.update(AWS_ENDPOINT_URL=stack.endpoint, **extra)
    return environment


def _illustrator(
    slim: Path, stack: Stack, *args: str, timeout: float = 60, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(slim / "illustrator"), *args],
        env=_env(stack, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=slim.parent.parent,
    )


def test_the_slim_install_has_none_of_the_pipelines_libraries(slim: Path) -> None:
    code = f"import importlib.util as u; print([m for m in {HEAVY!r} if u.find_spec(m)])"
    done = subprocess.run(
        [str(slim / "python"), "-c", code], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("command", OPERATOR_COMMANDS)
def test_each_operator_command_has_its_help(slim: Path, command: str) -> None:
    done = subprocess.run(
        [str(slim / "illustrator"), command, "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: illustrator {command}")


def test_schema_prints_the_contract_documents(slim: Path, stack: Stack) -> None:
    done = _illustrator(slim, stack, "schema")
    assert done.returncode == 0, done.stderr
    assert {"request", "event", "started"} <= set(json.loads(done.stdout))


def test_cancel_writes_the_marker(slim: Path, stack: Stack) -> None:
    done = _illustrator(slim, stack, "cancel", "job-1", "--user", "u1")
    assert done.returncode == 0, done.stderr
    marker = stack.client("s3").head_object(Bucket=stack.bucket, Key="cancellations/u1/job-1")
    assert marker["ContentLength"] == 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def worker(slim: Path, stack: Stack) -> Iterator[int]:
    """`illustrator run` of the slim install (builtin:blank); its health port."""
    port = _free_port()
    process = subprocess.Popen(
        [str(slim / "illustrator"), "run"],
        env=_env(stack, MODEL_PATH="builtin:blank", HEALTH_HOST="127.0.0.1", HEALTH_PORT=str(port)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while _illustrator(slim, stack, "health", "--url", _url(port)).returncode != 0:
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the slim worker never became healthy"
            time.sleep(0.2)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0


def _url(port: int) -> str:
    return f"http://127.0.0.1:{port}/health"


def test_submit_waits_for_a_slim_workers_picture(
    slim: Path, stack: Stack, worker: int, tmp_path: Path
) -> None:
    stack.put_input("avatars/u1.png")
    assert _illustrator(slim, stack, "health", "--url", _url(worker)).returncode == 0
    out = tmp_path / "picture.png"
    done = _illustrator(
        slim, stack, "submit", "memory", "--user-id", "u1", "--prompt", "a day at the sea",
        "--width", "128", "--height", "128", "--wait", "--timeout", "60", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "succeeded"
    assert out.read_bytes().startswith(b"\x89PNG")


def test_dlq_lists_and_redrives(slim: Path, stack: Stack) -> None:
    body = json.dumps({"job_id": "dead-1", "kind": "memory", "user_id": "u1", "prompt": "p"})
    stack.client("sqs").send_message(
        QueueUrl=stack.dlq_url,
        MessageBody=body,
        # A failure that may pass another time: the default redrive moves it.
        MessageAttributes={"error_code": {"DataType": "String", "StringValue": "internal_error"}},
    )
    listed = _illustrator(slim, stack, "dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["job_id"] == "dead-1"
    moved = _illustrator(slim, stack, "dlq", "redrive", "--method", "copy")
    assert moved.returncode == 0, moved.stderr
    assert "moved 1 message(s)" in moved.stdout
    assert stack.queue_counts() == (1, 0)


def test_run_with_a_model_names_the_extra_to_install(slim: Path, stack: Stack) -> None:
    done = _illustrator(slim, stack, "run", MODEL_PATH="builtin:tiny")
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].startswith(
        "illustrator: MODEL_PATH=builtin:tiny: the pipeline's libraries are not installed here"
    )
    assert "pip install 'autobio-illustrator[gpu]'" in done.stderr
