"""`illustrator sandbox`: a stack another shell submits to, as an integrator would."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from PIL import Image

from pipeline.api.lora_files import file_digest
from tests.support.assets import make_tiny_lora

ROOT = Path(__file__).resolve().parents[3]
START_TIMEOUT_S = 30
JOB_TIMEOUT_S = 45
EXPORTED = {
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION",
    "SQS_QUEUE_URL",
    "SQS_DLQ_URL",
    "SNS_TOPIC_ARN",
    "S3_BUCKET_NAME",
}


def _clean_environment() -> dict[str, str]:
    """This process's environment without any AWS or service settings of its own."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "SQS_", "SNS_", "S3_", "MODEL_"))
    }
    env["PYTHONPATH"] = str(ROOT)
    return env


def read_exports(path: Path) -> dict[str, str]:
    """The NAME=value pairs of `export NAME=value` lines, as a shell would read them."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        words = shlex.split(line)
        assert words[0] == "export", line
        name, _, value = words[1].partition("=")
        values[name] = value
    return values


def _wait_for_exports(sandbox: subprocess.Popen[str]) -> list[str]:
    """The export lines the sandbox prints once its stack is up."""
    assert sandbox.stdout is not None
    lines: list[str] = []
    for line in sandbox.stdout:
        if line.startswith("export "):
            lines.append(line.rstrip("\n"))
        if line.startswith("export S3_BUCKET_NAME="):
            return lines
    raise AssertionError(f"the sandbox ended before its stack was up (status {sandbox.wait()})")


def test_submit_and_dlq_in_another_shell_work_against_the_sandbox(tmp_path: Path) -> None:
    env_file = tmp_path / "sandbox.env"
    log = (tmp_path / "sandbox.log").open("w")
    lora = make_tiny_lora(tmp_path / "ink.safetensors")
    (tmp_path / "styles.yaml").write_text("styles:\n  ink: {lora: ink.safetensors}\n")
    command = ["sandbox", "--env-file", str(env_file), "--styles", str(tmp_path / "styles.yaml")]
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "consumer", *command],
        cwd=tmp_path,
        env=_clean_environment(),
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        printed = _wait_for_exports(sandbox)
        # The file is complete once the lines are printed, and says the same.
        assert env_file.read_text(encoding="utf-8").splitlines() == printed
        exports = read_exports(env_file)
        assert set(exports) >= EXPORTED
        assert exports["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")

        shell = {**_clean_environment(), **exports}
        out = tmp_path / "picture.png"
        job = ["memory", "--user-id", "demo", "--prompt", "a walk in the hills"]
        job += ["--steps", "2", "--seed", "7", "--timeout", str(JOB_TIMEOUT_S), "--out", str(out)]
        submit = subprocess.run(
            [sys.executable, "-m", "consumer", "submit", *job, "--wait"],
            cwd=tmp_path,
            env=shell,
            capture_output=True,
            text=True,
            timeout=JOB_TIMEOUT_S + 15,
        )
        assert submit.returncode == 0, submit.stderr
        event = json.loads(submit.stdout)
        assert event["status"] == "succeeded"
        assert event["model"] == "builtin:tiny"
        assert event["parameters"]["seed"] == 7
        with Image.open(out) as picture:
            assert picture.format == "PNG"
        assert event["parameters"]["style"] is None
        styled = subprocess.run(
            [sys.executable, "-m", "consumer", "submit", *job, "--style", "ink", "--wait"],
            cwd=tmp_path,
            env=shell,
            capture_output=True,
            text=True,
            timeout=JOB_TIMEOUT_S + 15,
        )
        assert styled.returncode == 0, styled.stderr
        parameters = json.loads(styled.stdout)["parameters"]
        assert (parameters["style"], parameters["style_digest"]) == ("ink", file_digest(lora))

        dlq = subprocess.run(
            [sys.executable, "-m", "consumer", "dlq", "list", "--json"],
            cwd=tmp_path,
            env=shell,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert dlq.returncode == 0, dlq.stderr
        assert dlq.stdout.strip() == ""

        sandbox.send_signal(signal.SIGTERM)
        assert sandbox.wait(timeout=START_TIMEOUT_S) == 0
    finally:
        if sandbox.poll() is None:
            sandbox.kill()
            sandbox.wait()
        log.close()
