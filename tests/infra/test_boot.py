"""Boots that heal: the user data and start-workers.sh with stub commands that
fail in each step. Every run ends in a retry that succeeds (workers running,
nothing reported) or in the instance marking itself Unhealthy (or, when it
cannot even learn its id, powering off), never in an idle instance.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time

import pytest

from tests.infra.cfn import Resolved, load_template
from tests.infra.test_worker_scripts import INSTANCE_ID, START, WATCHDOG, Host, host

__all__ = ["host"]

UNHEALTHY = [
    *("autoscaling", "set-instance-health", "--region", "us-east-1"),
    *("--instance-id", INSTANCE_ID, "--health-status", "Unhealthy"),
    "--no-should-respect-grace-period",
]
# (stub, word) of each boot step that calls out: IMDS token and instance id,
# the target lifecycle state, the GPU listing, the ECR login (password and
# docker login), the image pull, each container's start, and the first /health
# answer.
STEPS = [
    ("curl", "token"),
    ("curl", "instance-id"),
    ("curl", "target-lifecycle-state"),
    ("nvidia-smi", "-L"),
    ("aws", "ecr"),
    ("docker", "login"),
    ("docker", "pull"),
    ("docker", "run"),
    ("curl", "health"),
]


@pytest.fixture
def booting(host: Host) -> Host:
    """A host whose boot runs every step."""
    return host


def _calls_of(host: Host, stub: str, word: str) -> int:
    calls = host.calls(stub)
    if stub == "curl":
        return sum(1 for c in calls for a in c if a.startswith("http") and a.endswith("/" + word))
    return sum(1 for c in calls if c and c[0] == word)


def _docker_runs(host: Host) -> int:
    return sum(1 for c in host.calls("docker") if c[0] == "run")


@pytest.mark.parametrize(("stub", "word"), STEPS)
def test_a_step_that_fails_for_a_while_is_retried_until_it_works(
    booting: Host, stub: str, word: str
) -> None:
    booting.fail(stub, word, 2)
    result = booting.run(START)
    assert result.returncode == 0, result.stderr
    assert _calls_of(booting, stub, word) >= 3
    if (stub, word) != ("curl", "health"):  # waiting for health is not a failure
        assert "failed (attempt 2)" in result.stderr
    assert (booting.conf / "workers").read_text() == "illustrator-gpu0 8080\n"
    assert _docker_runs(booting) >= 1
    assert [c for c in booting.calls("aws") if c[0] == "autoscaling"] == []
    assert booting.calls("shutdown") == []


@pytest.mark.parametrize(("stub", "word"), STEPS)
def test_a_step_that_keeps_failing_has_the_instance_replaced(
    booting: Host, stub: str, word: str
) -> None:
    booting.fail(stub, word, 100_000)
    started = time.monotonic()
    result = booting.run(START, BOOT_HEALTHY_S="1")
    assert result.returncode == 1
    assert time.monotonic() - started < 30
    if stub == "curl" and word in ("token", "instance-id"):
        # Without its instance id it cannot name itself to Auto Scaling; a
        # stopped instance fails the group's EC2 health check instead.
        assert booting.calls("shutdown") == [["-h", "now"]]
    else:
        assert booting.calls("aws")[-1] == UNHEALTHY
        assert booting.calls("shutdown") == []
    if STEPS.index((stub, word)) < STEPS.index(("docker", "run")):
        assert _docker_runs(booting) == 0
    if (stub, word) != ("curl", "health"):
        assert not (booting.conf / "workers").exists()


@pytest.mark.parametrize(("state", "started"), [("paused", True), ("starting", False)])
def test_a_worker_paused_by_an_outage_at_boot_has_started(
    host: Host, state: str, started: bool
) -> None:
    # /health is 503 while paused, but the model is loaded and the worker
    # waits for AWS: a new instance would fare no better. One that never
    # loads its model is replaced.
    (host.root / "state-8080").write_text(state)
    result = host.run(START, BOOT_HEALTHY_S="1")
    assert result.returncode == (0 if started else 1), result.stderr
    reports = [c for c in host.calls("aws") if c[0] == "autoscaling"]
    assert reports == ([] if started else [UNHEALTHY])


def test_when_auto_scaling_cannot_be_told_the_instance_powers_off(booting: Host) -> None:
    booting.fail("docker", "pull", 100_000)
    booting.fail("aws", "autoscaling", 100_000)
    result = booting.run(START, BOOT_HEALTHY_S="1")
    assert result.returncode == 1
    assert [c[:2] for c in booting.calls("aws") if c[0] == "autoscaling"] == [
        ["autoscaling", "set-instance-health"]
    ] * 5
    assert booting.calls("shutdown") == [["-h", "now"]]


def test_the_watchdog_replaces_an_instance_whose_start_up_hangs(host: Host) -> None:
    # start-workers.sh never listed its workers (stuck in a step that hangs).
    (host.conf / "instance.env").write_text(f"INSTANCE_ID={INSTANCE_ID}\n")
    (host.conf / "boot-started").write_text(str(int(time.time())))
    assert host.run(WATCHDOG).returncode == 0
    assert host.calls("aws") == []

    (host.conf / "boot-started").write_text(str(int(time.time()) - 901 - 120))
    assert host.run(WATCHDOG).returncode == 0
    assert host.calls("aws") == [UNHEALTHY]


def _user_data(**parameters: str) -> str:
    resolved = Resolved(load_template(), parameters)
    data = resolved.resource("WorkerLaunchTemplate")["LaunchTemplateData"]["UserData"]
    return base64.b64decode(data).decode()


def _run_user_data(host: Host, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", script],
        env=host.env(ILLUSTRATOR_ROOT=str(host.root / "instance")),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_the_user_data_starts_the_watchdog_then_the_workers(host: Host) -> None:
    result = _run_user_data(host, _user_data())
    assert result.returncode == 0, result.stderr
    conf = host.root / "instance" / "etc" / "illustrator"
    assert (conf / "workers").read_text() == "illustrator-gpu0 8080\n"
    assert "BOOT_HEALTHY_S=900\n" in (conf / "fleet.env").read_text()
    # Both scripts that stop or restart a worker read its patience from there.
    sourced = subprocess.run(
        ["bash", "-uc", '. "$1/fleet.env" && echo "$STOP_TIMEOUT"', "-", str(conf)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert sourced.stdout == "180\n"
    lines = (host.root / "calls.jsonl").read_text().splitlines()
    order = [json.loads(line)[0] for line in lines]
    assert host.calls("systemctl") == [
        ["daemon-reload"],
        ["enable", "--now", "illustrator-watchdog.timer"],
        # Not started now (the user data runs the script): at every later boot.
        ["enable", "illustrator-workers.service"],
    ]
    assert order.index("systemctl") < order.index("docker")
    units = host.root / "instance" / "etc" / "systemd" / "system"
    watchdog = (units / "illustrator-watchdog.service").read_text()
    assert f"ExecStart={host.root}/instance/opt/illustrator/watchdog.sh" in watchdog
    workers = (units / "illustrator-workers.service").read_text().splitlines()
    assert f"ExecStart={host.root}/instance/opt/illustrator/start-workers.sh" in workers
    assert f"Environment=ILLUSTRATOR_CONF={conf}" in workers
    assert "After=network-online.target docker.service" in workers
    assert "WantedBy=multi-user.target" in workers
    assert "Type=oneshot" in workers


def test_the_user_data_of_a_boot_that_cannot_pull_ends_unhealthy(host: Host) -> None:
    host.fail("docker", "pull", 100_000)
    result = _run_user_data(host, _user_data(BootHealthySeconds="1"))
    assert result.returncode == 1
    assert host.calls("aws")[-1] == UNHEALTHY
    # The watchdog was already running when the start-up gave up.
    assert ["enable", "--now", "illustrator-watchdog.timer"] in host.calls("systemctl")


def test_the_user_data_takes_the_weights_from_the_stacks_bucket() -> None:
    script = _user_data()
    bucket = Resolved(load_template()).physical("Bucket")
    for line in (
        f"MODEL_S3_PATH=s3://{bucket}/models/stable-diffusion-xl-base-1.0/",
        "ENABLE_IP_ADAPTER=true",
        f"IP_ADAPTER_PATH=s3://{bucket}/models/IP-Adapter/",
        f"SAFETY_CHECKER_PATH=s3://{bucket}/models/stable-diffusion-safety-checker/",
        "VAE_PATH=",
        "LORA_PATH=",
        "ENABLE_LORA=false",
        "DEVICE=cuda",
        "MAX_ATTEMPTS=3",
        "OUTAGE_HOLD_S=3600",
        "S3_CANCEL_PREFIX=cancellations/",
        "CANCEL_POLL_S=2",
        "SAFETY_MAX_REDRAWS=2",
        "MAX_INPUT_ASPECT=8",
    ):
        assert f"\n{line}\n" in script, line
    # An empty key turns that part off; a LoRA key turns LoRA on.
    chosen = _user_data(
        SafetyCheckerPath="", IpAdapterPath="", LoraPath="models/loras/style.safetensors"
    )
    assert "\nSAFETY_CHECKER_PATH=\n" in chosen
    assert "\nENABLE_IP_ADAPTER=false\n" in chosen
    assert "\nENABLE_LORA=true\n" in chosen
    assert f"\nLORA_PATH=s3://{bucket}/models/loras/style.safetensors\n" in chosen


def test_worker_settings_pass_through_to_the_workers_env_file(host: Host) -> None:
    # The runbook's few-step recipe: settings the template has no parameter for,
    # one replacing a line the template writes itself; a value with spaces and commas.
    passed = (
        "SCHEDULER=LCMScheduler;TIMESTEP_SPACING=trailing;DEFAULT_NUM_INFERENCE_STEPS=4;"
        "MAX_ATTEMPTS=5;DEFAULT_NEGATIVE_PROMPT=blurry, low quality $HOME `x`"
    )
    result = _run_user_data(host, _user_data(WorkerSettings=passed))
    assert result.returncode == 0, result.stderr
    env_file = host.root / "instance" / "etc" / "illustrator" / "illustrator.env"
    lines = env_file.read_text().splitlines()
    assert [line for line in lines if line.startswith("MAX_ATTEMPTS=")] == ["MAX_ATTEMPTS=5"]
    assert "DEFAULT_NEGATIVE_PROMPT=blurry, low quality $HOME `x`" in lines
    assert not (env_file.parent / "worker-settings").exists()
    # The file is what the container reads: the service takes every line as given.
    from consumer.settings import Settings

    settings = Settings(_env_file=str(env_file))  # type: ignore[call-arg]
    assert (settings.scheduler, settings.timestep_spacing) == ("LCMScheduler", "trailing")
    assert (settings.default_num_inference_steps, settings.max_attempts) == (4, 5)
    assert settings.default_negative_prompt == "blurry, low quality $HOME `x`"


def test_without_worker_settings_the_env_file_is_the_templates_own(host: Host) -> None:
    result = _run_user_data(host, _user_data())
    assert result.returncode == 0, result.stderr
    env_file = host.root / "instance" / "etc" / "illustrator" / "illustrator.env"
    names = [line.split("=", 1)[0] for line in env_file.read_text().splitlines() if line]
    assert len(names) == len(set(names))
    assert "SCHEDULER" not in names
