"""A container engine (Podman or Docker) driven by its command line, and the
containers the image tests start with it.

The engine is ``CONTAINER_ENGINE`` when set, else Docker where its daemon
answers, else Podman, as ``make image`` chooses; Podman runs with the
settings of ``image/containers.conf`` unless ``CONTAINERS_CONF`` names others.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PODMAN_CONF = ROOT / "image" / "containers.conf"


@dataclass(frozen=True)
class Engine:
    """One container engine's command line."""

    name: str

    @property
    def executable(self) -> str:
        """The engine's absolute path."""
        found = shutil.which(self.name)
        if found is None:
            raise RuntimeError(f"{self.name} is not installed: run `make image`")
        return found

    def environment(self) -> dict[str, str]:
        """The environment the engine's commands run with."""
        env = dict(os.environ)
        if self.name == "podman":
            env.setdefault("CONTAINERS_CONF", str(PODMAN_CONF))
        return env

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run one engine command; its output as text."""
        done = subprocess.run(
            [self.executable, *args],
            env=self.environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{self.name} {' '.join(args)}: {done.stderr.strip()}")
        return done

    def run_once(
        self, image: str, cache: Path, *argv: str, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        """``python ARGV`` in a throwaway container of `image` with the
        deployed worker's file system: a read-only root, a tmpfs on /tmp
        and `cache` as the cache volume; no network. Not checked."""
        options = ["--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp"]
        if self.name == "podman":
            options.append("--read-only-tmpfs=false")  # as Docker: /tmp only
        options += ["--volume", f"{cache}:/var/cache/illustrator"]
        return self(
            "run", *options, "--entrypoint", "python", image, *argv, check=False, timeout=timeout
        )

    def inspect(self, kind: str, name: str) -> dict[str, Any]:
        """``<kind> inspect`` of one image or container."""
        found: list[dict[str, Any]] = json.loads(self(kind, "inspect", name).stdout)
        return found[0]


def health_check(image: dict[str, Any]) -> list[str]:
    """The HEALTHCHECK's ``Test`` of an image inspection (Podman puts it
    beside ``Config``, Docker inside); empty when the image has none."""
    found = image.get("Healthcheck") or image["Config"].get("Healthcheck") or {}
    return list(found.get("Test", []))


def engine_from_environment() -> Engine:
    """The engine ``make image`` used (see the module's docstring)."""
    chosen = os.environ.get("CONTAINER_ENGINE")
    if chosen:
        return Engine(chosen)
    if shutil.which("docker"):
        answers = subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=30)
        if answers.returncode == 0:
            return Engine("docker")
    return Engine("podman")


@dataclass(frozen=True)
class Container:
    """A container by name."""

    engine: Engine
    name: str

    def state(self) -> dict[str, Any]:
        """Its ``State`` (Running, ExitCode, ...)."""
        state: dict[str, Any] = self.engine.inspect("container", self.name)["State"]
        return state

    def config(self) -> dict[str, Any]:
        """Its whole inspection."""
        return self.engine.inspect("container", self.name)

    def logs(self) -> str:
        """What the process wrote (the service logs to stderr)."""
        done = self.engine("logs", self.name, check=False)
        return done.stdout + done.stderr

    def exec(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside it, as the image's user; not checked."""
        return self.engine("exec", self.name, *argv, check=False)

    def process_environment(self) -> dict[str, str]:
        """The environment of its main process, as /proc shows it."""
        raw = self.exec("cat", "/proc/1/environ")
        assert raw.returncode == 0, raw.stderr
        pairs = (item.partition("=") for item in raw.stdout.split("\0") if item)
        return {name: value for name, _, value in pairs}

    def stop(self, timeout: float) -> float:
        """``stop`` with the container's own stop timeout; the seconds it took."""
        started = time.monotonic()
        self.engine("stop", self.name, timeout=timeout)
        return time.monotonic() - started

    def remove(self) -> None:
        """Remove it, running or not."""
        self.engine("rm", "--force", self.name, check=False)
