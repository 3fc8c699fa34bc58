"""A worker instance in a temporary folder: ``infra/start-workers.sh`` run as the
user data runs it, against this machine's container engine.

What an EC2 GPU instance has and this machine lacks is stood in for on PATH:
the instance metadata service behind ``curl`` (every other URL goes to the
real curl, so the script's health wait asks the real container),
``nvidia-smi`` listing one pretend GPU, and ``aws``, ``shutdown`` and
``systemctl`` doing nothing (the worker reads its signing token from Secrets
Manager itself, here moto's). ``docker`` is this machine's
engine, running the script's own command line with the few translations
:func:`translate` lists; every command the script gave is recorded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.containers import ROOT, Container, Engine

START = ROOT / "infra" / "start-workers.sh"
INSTANCE_ID = "i-0image0test"
# Never the real metadata service: the stub answers this prefix.
IMDS = "http://instance-metadata.invalid/latest"
WORKER_NAME = re.compile(r"illustrator-gpu\d+")
# The one GPU nvidia-smi lists.
PRETEND_GPU = "GPU 0: NVIDIA A10G (UUID: GPU-00000000-pretend)"


def translate(argv: list[str], engine: str, prefix: str) -> list[str]:
    """The script's ``docker ARGS`` as this machine's engine runs them.

    - Container names get `prefix`, so runs side by side do not meet.
    - ``pull``: the image is local (``make image``), so it is inspected.
    - ``run``: host networking (the only networking here), so ``-p`` goes;
      ``--gpus`` goes (no GPU here: the worker runs on the CPU); the awslogs
      driver and its options become the engine's local log file; with
      Podman, a read-only root gets no tmpfs beyond those asked for, as with
      Docker.
    """
    argv = [prefix + a if WORKER_NAME.fullmatch(a) else a for a in argv]
    if argv[:1] == ["pull"]:
        return ["image", "inspect", "--format", "{{.Id}}", *argv[1:]]
    if argv[:1] != ["run"]:
        return argv
    out = ["run", "--network", "host"]
    if engine == "podman" and "--read-only" in argv:
        out.append("--read-only-tmpfs=false")
    rest = iter(argv[1:])
    for arg in rest:
        if arg in ("-p", "--publish", "--gpus"):
            next(rest)
        elif arg == "--log-driver":
            next(rest)
            out += ["--log-driver", "k8s-file" if engine == "podman" else "json-file"]
        elif arg == "--log-opt":
            option = next(rest)
            if not option.startswith("awslogs-"):
                out += [arg, option]
        else:
            out.append(arg)
    return out


SHIM = """#!{python}
import json, os, sys
sys.path.insert(0, {root!r})
from tests.support.instance import translate
with open(os.path.join({folder!r}, "docker.jsonl"), "a") as calls:
    calls.write(json.dumps(sys.argv[1:]) + "\\n")
os.execv({engine!r}, [{engine!r}, *translate(sys.argv[1:], {name!r}, {prefix!r})])
"""
# The metadata an instance outside any Auto Scaling group has: its id; no
# target lifecycle state and no group tag (404, as IMDS answers them).
CURL = """#!{python}
import os, sys
args = sys.argv[1:]
url = next((a for a in args if a.startswith("http")), "")
if url.startswith({imds!r}):
    answers = {{"/api/token": "token", "/meta-data/instance-id": {instance!r}}}
    found = [v for k, v in answers.items() if url.endswith(k)]
    body = found[0] if found else ""
    if "-w" in args:  # the status on stdout, the body into -o's file
        if "-o" in args:
            with open(args[args.index("-o") + 1], "w") as out:
                out.write(body)
        print("200" if found else "404", end="")
        sys.exit(0)
    print(body, end="")
    sys.exit(0 if found else 22)
os.execv({curl!r}, ["curl", *args])
"""
GPUS = f"#!/bin/sh\necho '{PRETEND_GPU}'\n"
NOTHING = "#!/bin/sh\nexit 0\n"


@dataclass
class Instance:
    """A temporary instance root: configuration, cache and stand-ins."""

    root: Path
    engine: Engine
    image: str
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:8]}-")

    def __post_init__(self) -> None:
        self.conf = self.root / "etc"
        self.cache = self.root / "cache"
        self.bin = self.root / "bin"
        for folder in (self.conf, self.bin):
            folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()

    def start(
        self,
        settings: dict[str, str],
        *,
        stop_timeout: int = 60,
        boot_healthy_s: int = 240,
    ) -> subprocess.CompletedProcess[str]:
        """Run start-workers.sh with the service's `settings` (its env file);
        it returns once a worker answers /health, or fails."""
        self._stand_ins()
        fleet = {
            "IMAGE": self.image,
            "AWS_REGION": "us-east-1",
            "LOG_GROUP": "/illustrator/image-test",
            "STOP_TIMEOUT": str(stop_timeout),
        }
        (self.conf / "fleet.env").write_text("".join(f"{k}='{v}'\n" for k, v in fleet.items()))
        service = "".join(f"{k}={v}\n" for k, v in settings.items())
        (self.conf / "illustrator.env").write_text(service)
        return subprocess.run(
            ["bash", str(START)],
            env={
                **self.engine.environment(),
                "PATH": f"{self.bin}:/usr/bin:/bin",
                "ILLUSTRATOR_CONF": str(self.conf),
                "CACHE_DIR": str(self.cache),
                "BASE_PORT": str(self.port),
                "IMDS": IMDS,
                "BOOT_HEALTHY_S": str(boot_healthy_s),
                "RETRY_BASE_S": "1",
                "HEALTH_POLL_S": "0.5",
            },
            capture_output=True,
            text=True,
            timeout=boot_healthy_s + 60,
            check=False,
        )

    def worker(self, n: int = 0) -> Container:
        """The container the script started for GPU `n`."""
        return Container(self.engine, f"{self.prefix}illustrator-gpu{n}")

    def docker_calls(self) -> list[list[str]]:
        """Each ``docker`` command line the script gave, as it gave it."""
        path = self.root / "docker.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [json.loads(line) for line in lines]

    def _stand_ins(self) -> None:
        real_curl = shutil.which("curl", path="/usr/bin:/bin")
        assert real_curl, "curl is needed for the script's health checks"
        python = sys.executable
        scripts = {
            "docker": SHIM.format(
                python=python,
                root=str(ROOT),
                folder=str(self.root),
                engine=self.engine.executable,
                name=self.engine.name,
                prefix=self.prefix,
            ),
            "curl": CURL.format(python=python, imds=IMDS, instance=INSTANCE_ID, curl=real_curl),
            "aws": NOTHING,
            "nvidia-smi": GPUS,
            "shutdown": NOTHING,
            "systemctl": NOTHING,
        }
        for name, text in scripts.items():
            path = self.bin / name
            path.write_text(text)
            path.chmod(0o755)


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def worker_environment() -> dict[str, str]:
    """The variables every worker of these tests gets besides its stack's."""
    return {"MODEL_PATH": "builtin:tiny", "DEVICE": "cpu", "LOG_FORMAT": "json"}


def is_root() -> bool:
    """Whether this process may chown the cache for uid 10001, as the instance does."""
    return os.geteuid() == 0
