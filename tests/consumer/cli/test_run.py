"""`illustrator run` refuses bad configuration in one line, exit 2, before loading."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.aws import Stack
from tests.support.helpers import memory

ROOT = Path(__file__).resolve().parents[3]
# Each refusal comes before any model, AWS client or torch import.
FAST_S = 10.0


def _run(aws: Stack | None = None, **env: str) -> tuple[int, list[str], float]:
    """`illustrator run` with `env`, against `aws` (else an address where
    nothing answers); its exit code, stderr lines and seconds."""
    environment = {
        **os.environ,
        "SQS_QUEUE_URL": "http://127.0.0.1:1/000000000000/requests",
        "SNS_TOPIC_ARN": "arn:aws:sns:us-east-1:000000000000:events",
        "S3_BUCKET_NAME": "illustrations",
        "HEALTH_HOST": "127.0.0.1",
        "HEALTH_PORT": "0",
        "LOG_FORMAT": "json",
        "PYTHONPATH": str(ROOT),
        **(aws.environment() if aws is not None else {}),
        **env,
    }
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "consumer", "run"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stderr.splitlines(), time.monotonic() - started


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("builtin:tinyy", "MODEL_PATH=builtin:tinyy: unknown built-in model"),
        ("/nope/model", "MODEL_PATH=/nope/model: not a local folder"),
        ("nobody/no-such-model", "MODEL_PATH=nobody/no-such-model: not a local folder, nor a hub"),
    ],
)
def test_a_bad_model_path_is_one_line_and_exit_two(
    model: str, expected: str, tmp_path: Path
) -> None:
    code, lines, seconds = _run(MODEL_PATH=model, HF_HUB_CACHE=str(tmp_path))
    assert code == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"illustrator: {expected}")
    assert "builtin:blank, builtin:tiny" in lines[0]
    assert seconds < FAST_S


def test_a_real_model_without_a_gpu_is_one_line_and_exit_two(tmp_path: Path, stack: Stack) -> None:
    import torch

    from pipeline.builtin.tiny import save_tiny

    if torch.cuda.is_available():
        pytest.skip("needs a machine without a GPU")
    model_dir, ip_dir = save_tiny(tmp_path)
    common = {"MODEL_PATH": str(model_dir), "IP_ADAPTER_PATH": str(ip_dir), "DEVICE": ""}
    # AWS answers: the start-up checks pass, and the machine is refused next.
    code, lines, _ = _run(stack, **common)
    assert code == 2
    # Found once the sidecar listens (its log line comes first), before any
    # weight is read; no traceback, one line of its own.
    *logs, refusal = lines
    assert all(json.loads(line)["level"] == "info" for line in logs), logs
    assert refusal.startswith("illustrator: DEVICE is not set and no CUDA GPU is visible: ")
    # The cause here: this machine's torch has no CUDA at all.
    assert "CPU-only build" in refusal
    assert "set DEVICE=cpu" in refusal
    assert not any("loading" in line for line in logs)


def test_a_health_port_in_use_is_one_line_and_exit_two(busy_port: int) -> None:
    code, lines, seconds = _run(MODEL_PATH="builtin:blank", HEALTH_PORT=str(busy_port))
    assert code == 2
    assert lines == [
        f"illustrator: HEALTH_PORT={busy_port}: cannot listen on 127.0.0.1:{busy_port}: "
        "address already in use"
    ]
    assert seconds < FAST_S


def test_the_help_lists_required_settings_and_exit_codes() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "consumer", "run", "--help"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for name in ("SQS_QUEUE_URL", "SNS_TOPIC_ARN", "MODEL_PATH", "HEALTH_PORT"):
        assert name in done.stdout
    for code in ("0 ", "1 ", "2 "):
        assert f"\n  {code}" in done.stdout


PROMPT = "my grandmother's lighthouse at dusk"


def test_a_running_consumer_writes_only_json_lines_without_prompts(stack: Stack) -> None:
    stack.put_input("avatars/user1.png")
    stack.send(memory("ok-1", prompt=PROMPT))
    # Fails (no input picture for this user): the failure is logged, not the prompt.
    stack.send(memory("missing-1", user_id="nobody", prompt=PROMPT))
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "MODEL_PATH": "builtin:blank"}
    done = subprocess.run(
        [sys.executable, "-m", "consumer", "run", "--burst"],
        env={
            **environment,
            "HEALTH_HOST": "127.0.0.1",
            "HEALTH_PORT": "0",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "debug",
            "RETRY_BACKOFF_BASE_S": "0",
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines()]
    events = {(r.get("event"), r.get("job_id")) for r in records}
    assert ("job_succeeded", "ok-1") in events
    assert ("job_failed", "missing-1") in events
    assert PROMPT not in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize(
    "command",
    [
        ["run"],
        ["submit", "memory", "--user-id", "u1", "--prompt", "a day at the sea"],
        ["cancel", "job-1", "--user", "u1"],
    ],
)
def test_no_command_falls_back_on_a_bucket_of_its_own(command: list[str]) -> None:
    # Without S3_BUCKET_NAME there is no bucket to use: a made-up default
    # would be somebody else's.
    environment = {k: v for k, v in os.environ.items() if k != "S3_BUCKET_NAME"}
    environment.update(
        SQS_QUEUE_URL="http://127.0.0.1:1/000000000000/requests",
        SNS_TOPIC_ARN="arn:aws:sns:us-east-1:000000000000:events",
        AWS_ENDPOINT_URL="http://127.0.0.1:1",
        MODEL_PATH="builtin:blank",
        PYTHONPATH=str(ROOT),
    )
    done = subprocess.run(
        [sys.executable, "-m", "consumer", *command],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["illustrator: S3_BUCKET_NAME is required but not set"]


def _catalog(folder: Path, wash: str) -> Path:
    from tests.support.lora_headers import diffusers_lora, kohya_lora

    diffusers_lora(folder / "ink.safetensors")
    diffusers_lora(folder / "text.safetensors", text_encoder=True)
    kohya_lora(folder / "conv.safetensors", ("input_blocks_1_0_in_layers_2",))
    catalog = folder / "styles.yaml"
    catalog.write_text(f"styles:\n  ink: {{lora: ink.safetensors}}\n  wash: {wash}\n")
    return catalog


@pytest.mark.parametrize(
    ("wash", "expected"),
    [
        ("{lora: [", "not YAML"),
        ("{lora: text.safetensors}", "style 'wash': it has 2 text-encoder tensors"),
        ("{lora: conv.safetensors}", "style 'wash': it targets in_layers_2; a style's LoRA"),
        ("{lora: gone.safetensors}", "style 'wash': LoRA {folder}/gone.safetensors does not exist"),
        ("{lora_scale: 9}", "styles.wash.lora_scale: Input should be less than or equal to 4"),
    ],
)
def test_a_catalog_with_a_style_that_cannot_work_exits_two_naming_it(
    tmp_path: Path, wash: str, expected: str
) -> None:
    catalog = _catalog(tmp_path, wash)
    code, lines, seconds = _run(MODEL_PATH="builtin:blank", STYLES_PATH=str(catalog))
    assert code == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        f"illustrator: STYLES_PATH={catalog}: {expected.format(folder=tmp_path)}"
    )
    assert seconds < FAST_S


def test_a_lora_the_model_cannot_take_exits_two_naming_its_style(
    tmp_path: Path, stack: Stack
) -> None:
    from tests.support.lora_headers import diffusers_lora

    # Layers named as the tiny UNet's, sized as another model's.
    diffusers_lora(tmp_path / "alien.safetensors", blocks=1, width=640)
    catalog = tmp_path / "styles.yaml"
    catalog.write_text("styles:\n  alien: {lora: alien.safetensors}\n")
    code, lines, _ = _run(
        stack, MODEL_PATH="builtin:tiny", WARMUP="false", STYLES_PATH=str(catalog)
    )
    assert code == 2
    assert lines[-1].startswith(f"illustrator: STYLES_PATH={catalog}: style 'alien': ")
    assert "do not fit the model's layer" in lines[-1]
