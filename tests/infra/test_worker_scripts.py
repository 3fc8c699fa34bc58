"""infra/start-workers.sh and infra/watchdog.sh, run with stub commands on PATH.

The stubs (`docker`, `nvidia-smi`, `curl`, `aws`, `systemctl`, `shutdown`)
record each call, one JSON argv a line, and answer from files in the
temporary root: the number of GPUs, whether /livez and /health answer
(``down-<port>``) and in which worker state (``state-<port>``, ready unless
written, answered as the sidecar does), when a container started, the
target lifecycle state and the group's name in the instance metadata
(``target-state``, ``group``; 404 while absent, as outside a group). A file
``fail-<stub>-<word>`` holding N makes the next N calls of that stub fail
(exit 1), where the word is the first argument (the last path segment of the
URL for curl).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
START = ROOT / "infra" / "start-workers.sh"
WATCHDOG = ROOT / "infra" / "watchdog.sh"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/illustrator:1.0.0"
INSTANCE_ID = "i-0abc123"

# Each stub appends its name and argv to calls.jsonl, then answers.
RECORD = """#!/usr/bin/env python3
import json, os, sys
name = os.path.basename(sys.argv[0])
with open(os.path.join(os.environ["STUB_ROOT"], "calls.jsonl"), "a") as f:
    f.write(json.dumps([name, *sys.argv[1:]]) + "\\n")
url = next((a for a in sys.argv if a.startswith("http")), "")
word = url.rstrip("/").rsplit("/", 1)[-1] if name == "curl" else sys.argv[1]
fail = os.path.join(os.environ["STUB_ROOT"], f"fail-{name}-{word}")
if os.path.exists(fail):
    left = int(open(fail).read())
    if left > 0:
        open(fail, "w").write(str(left - 1))
        sys.exit(1)
"""
STUBS = {
    "nvidia-smi": RECORD
    + """n = int(open(os.path.join(os.environ["STUB_ROOT"], "gpus")).read())
for i in range(n):
    print(f"GPU {i}: NVIDIA A10G (UUID: GPU-{i:08d})")
""",
    "curl": RECORD
    + """if url.endswith("/api/token"):
    print("token")
elif "/meta-data/" in url:
    # Read with -o FILE -w '%{http_code}': the value into FILE, the status out.
    path = url.split("/meta-data/", 1)[1]
    names = {"autoscaling/target-lifecycle-state": "target-state"}
    names["tags/instance/aws:autoscaling:groupName"] = "group"
    source = os.path.join(os.environ["STUB_ROOT"], names.get(path, "no-such-file"))
    value = os.environ["STUB_INSTANCE_ID"] if path == "instance-id" else None
    if value is None and os.path.exists(source):
        value = open(source).read().strip()
    if value is not None:
        with open(sys.argv[sys.argv.index("-o") + 1], "w") as out:
            out.write(value)
        print("200", end="")
    else:
        print("404", end="")
elif url.endswith("/livez") or url.endswith("/health"):
    port = url.split(":")[2].split("/")[0]
    root = os.environ["STUB_ROOT"]
    if os.path.exists(os.path.join(root, "down-" + port)):
        sys.exit(22)
    path = os.path.join(root, "state-" + port)
    state = open(path).read().strip() if os.path.exists(path) else "ready"
    # As the sidecar: /livez fails only after a fatal error, /health unless ready.
    if url.endswith("/livez"):
        ok, good = state != "unhealthy", "ok"
    else:
        ok, good = state in ("ready", "busy"), "healthy"
    if "-o" not in sys.argv:
        print(json.dumps({"status": good if ok else state, "state": state}))
    failing = any(a.startswith("-") and not a.startswith("--") and "f" in a for a in sys.argv[1:])
    sys.exit(22 if failing and not ok else 0)
""",
    "docker": RECORD
    + """if sys.argv[1] == "inspect":
    print(open(os.path.join(os.environ["STUB_ROOT"], "started-at")).read().strip())
elif sys.argv[1] == "run":
    print("0123456789ab")
elif "--password-stdin" in sys.argv:
    sys.stdin.read()
""",
    "aws": RECORD + 'print("secret-value")\n',
    "systemctl": RECORD,
    "shutdown": RECORD,
}


@dataclass
class Host:
    """A temporary root standing in for a worker instance."""

    root: Path

    @property
    def conf(self) -> Path:
        return self.root / "etc"

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **extra,
            "PATH": f"{self.root / 'bin'}:/usr/bin:/bin",
            "STUB_ROOT": str(self.root),
            "STUB_INSTANCE_ID": INSTANCE_ID,
            "BOOT_ID_FILE": str(self.root / "boot_id"),
            "ILLUSTRATOR_CONF": str(self.conf),
            "CACHE_DIR": str(self.root / "cache"),
            "WATCHDOG_STATE_DIR": str(self.root / "state"),
            # Retries without waits: the tests count attempts, not seconds.
            "RETRY_BASE_S": "0",
            "HEALTH_POLL_S": "0.05",
        }

    def run(self, script: Path, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(script)],
            env=self.env(**extra),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    def fail(self, stub: str, word: str, times: int) -> None:
        """Make the next `times` calls of `stub` with `word` fail."""
        (self.root / f"fail-{stub}-{word}").write_text(str(times))

    def calls(self, command: str | None = None) -> list[list[str]]:
        path = self.root / "calls.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        found = [json.loads(line) for line in lines]
        return [c[1:] for c in found if command is None or c[0] == command]

    def clear_calls(self) -> None:
        (self.root / "calls.jsonl").unlink(missing_ok=True)


@pytest.fixture
def host(tmp_path: Path) -> Host:
    (tmp_path / "bin").mkdir()
    for name, body in STUBS.items():
        stub = tmp_path / "bin" / name
        stub.write_text(body)
        stub.chmod(0o755)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "fleet.env").write_text(
        f"IMAGE='{IMAGE}'\nAWS_REGION=us-east-1\nLOG_GROUP=/illustrator/test\nSTOP_TIMEOUT=120\n"
    )
    (tmp_path / "etc" / "illustrator.env").write_text("SQS_QUEUE_URL=https://q\n")
    (tmp_path / "gpus").write_text("1")
    (tmp_path / "boot_id").write_text("boot-1\n")
    (tmp_path / "started-at").write_text("2020-01-01T00:00:00Z")
    return Host(tmp_path)


def _option(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


@pytest.mark.parametrize("gpus", [1, 4])
def test_one_container_per_gpu(host: Host, gpus: int) -> None:
    (host.root / "gpus").write_text(str(gpus))
    result = host.run(START)
    assert result.returncode == 0, result.stderr

    runs = [c for c in host.calls("docker") if c[0] == "run"]
    assert len(runs) == gpus
    assert [_option(r, "--gpus") for r in runs] == [[f"device={n}"] for n in range(gpus)]
    assert [_option(r, "--name") for r in runs] == [[f"illustrator-gpu{n}"] for n in range(gpus)]
    envs = [sorted(_option(r, "-e")) for r in runs]
    assert envs == [
        [f"HEALTH_PORT={8080 + n}", f"WORKER_ID={INSTANCE_ID}-gpu{n}"] for n in range(gpus)
    ]
    assert [_option(r, "-p") for r in runs] == [
        [f"127.0.0.1:{8080 + n}:{8080 + n}"] for n in range(gpus)
    ]
    for n, argv in enumerate(runs):
        assert argv[-1] == IMAGE
        assert _option(argv, "-v") == [f"{host.root / 'cache'}:/var/cache/illustrator"]
        assert _option(argv, "--log-driver") == ["awslogs"]
        assert f"awslogs-stream={INSTANCE_ID}-gpu{n}" in _option(argv, "--log-opt")
        assert _option(argv, "--env-file") == [str(host.conf / "illustrator.env")]
    # ECR image: log in first, pull once for all workers.
    assert [c[0] for c in host.calls("docker") if c[0] in ("login", "pull")] == ["login", "pull"]
    workers = (host.conf / "workers").read_text().splitlines()
    assert workers == [f"illustrator-gpu{n} {8080 + n}" for n in range(gpus)]
    assert (host.conf / "instance.env").read_text() == f"INSTANCE_ID={INSTANCE_ID}\n"


def test_no_gpu_has_the_instance_replaced(host: Host) -> None:
    (host.root / "gpus").write_text("0")
    result = host.run(START, BOOT_HEALTHY_S="1")
    assert result.returncode == 1
    assert "nvidia-smi listing a GPU still fails" in result.stderr
    assert not [c for c in host.calls("docker") if c[0] == "run"]
    assert host.calls("aws")[-1][:2] == ["autoscaling", "set-instance-health"]


def test_the_boot_never_reads_nor_passes_the_signing_token(host: Host) -> None:
    env_file = host.conf / "illustrator.env"
    env_file.write_text(
        "SQS_QUEUE_URL=https://q\nAUTH_ENABLED=true\nAUTH_TOKEN_SECRET_ID=arn:secret\n"
    )
    env_file.chmod(0o600)
    before = env_file.read_text()
    assert host.run(START).returncode == 0
    # The worker reads the secret itself; the env file is left as the user data wrote it.
    assert [c for c in host.calls("aws") if c[0] == "secretsmanager"] == []
    assert env_file.read_text() == before
    assert env_file.stat().st_mode & 0o077 == 0
    assert all("AUTH_TOKEN=" not in " ".join(c) for c in host.calls("docker"))


def _started(host: Host, gpus: int) -> Host:
    (host.root / "gpus").write_text(str(gpus))
    assert host.run(START).returncode == 0
    host.clear_calls()
    return host


def _actions(host: Host) -> list[list[str]]:
    """The calls that change something: restarts and health reports."""
    restarts = [c for c in host.calls("docker") if c[0] == "restart"]
    return restarts + host.calls("aws")


@pytest.mark.parametrize("states", [("ready", "busy"), ("paused", "draining")])
def test_live_workers_are_left_alone(host: Host, states: tuple[str, str]) -> None:
    # Paused by an AWS outage or draining, /health is 503 but /livez is 200:
    # neither is a reason to restart a worker or replace its instance.
    _started(host, 2)
    for port, state in zip((8080, 8081), states, strict=True):
        (host.root / f"state-{port}").write_text(state)
    for _ in range(5):
        assert host.run(WATCHDOG).returncode == 0
    probes = [c[-1] for c in host.calls("curl")]
    assert probes == ["http://127.0.0.1:8080/livez", "http://127.0.0.1:8081/livez"] * 5
    assert _actions(host) == []


def test_a_hung_worker_is_restarted_then_its_instance_reported(host: Host) -> None:
    _started(host, 2)
    (host.root / "down-8081").touch()

    for _ in range(2):
        assert host.run(WATCHDOG).returncode == 0
    assert _actions(host) == []
    assert host.run(WATCHDOG).returncode == 0
    assert _actions(host) == [["restart", "--time", "120", "illustrator-gpu1"]]

    host.clear_calls()
    for _ in range(3):
        assert host.run(WATCHDOG).returncode == 0
    assert _actions(host) == [
        [
            *("autoscaling", "set-instance-health", "--region", "us-east-1"),
            *("--instance-id", INSTANCE_ID, "--health-status", "Unhealthy"),
            "--no-should-respect-grace-period",
        ]
    ]
    # Reported once: later passes do not call Auto Scaling again.
    host.clear_calls()
    for _ in range(3):
        assert host.run(WATCHDOG).returncode == 0
    assert _actions(host) == []


def test_a_restart_that_helps_resets_the_count(host: Host) -> None:
    _started(host, 1)
    down = host.root / "down-8080"
    down.touch()
    for _ in range(3):
        host.run(WATCHDOG)
    assert len(_actions(host)) == 1
    down.unlink()
    host.run(WATCHDOG)
    down.touch()
    host.clear_calls()
    for _ in range(3):
        host.run(WATCHDOG)
    # A fresh episode: a restart again, not an Unhealthy report.
    assert _actions(host) == [["restart", "--time", "120", "illustrator-gpu0"]]


def test_a_container_that_just_started_is_not_probed(host: Host) -> None:
    _started(host, 1)
    (host.root / "down-8080").touch()
    now = subprocess.run(
        ["date", "-u", "+%Y-%m-%dT%H:%M:%SZ"], capture_output=True, text=True, check=True
    )
    (host.root / "started-at").write_text(now.stdout)
    for _ in range(4):
        assert host.run(WATCHDOG).returncode == 0
    assert host.calls("curl") == []
    assert _actions(host) == []


def test_scripts_are_valid_bash() -> None:
    for script in (START, WATCHDOG):
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert os.access(script, os.X_OK)
