"""`illustrator run` as a child process: start, probe its sidecar, kill, restart.

Each incarnation logs to a file of its own (stdout and stderr together), from
which the sidecar's port is read: the children bind port 0, so several run
side by side without port clashes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

STARTUP_S = 60.0


@dataclass(frozen=True)
class Probe:
    """One answer of the sidecar."""

    path: str
    status: int
    body: str


@dataclass
class ConsumerProcess:
    """One consumer slot; :meth:`start` makes a new incarnation each time.

    Attributes:
        env: the child's whole environment.
        workdir: its working directory (no stray `.env` is read) and log folder.
        module: the module run as ``python -m MODULE run``.
        exits: ``(incarnation, status)`` of every incarnation that ended.
    """

    name: str
    env: dict[str, str]
    workdir: Path
    module: str = "consumer"
    incarnation: int = 0
    process: subprocess.Popen[bytes] | None = None
    exits: list[tuple[int, int]] = field(default_factory=list)
    _url: str | None = None

    @property
    def log_path(self) -> Path:
        """The log file of the current incarnation."""
        return self.workdir / f"{self.name}.{self.incarnation}.log"

    def logs(self) -> str:
        """Everything every incarnation has logged so far."""
        return "".join(
            path.read_text(errors="replace")
            for path in sorted(self.workdir.glob(f"{self.name}.*.log"))
        )

    def start(self) -> None:
        """Start a new incarnation (the previous one must have ended)."""
        if self.alive:
            raise RuntimeError(f"{self.name} is still running")
        self.incarnation += 1
        self._url = None
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module, "run"],
                env=self.env,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def alive(self) -> bool:
        """Whether the current incarnation is running."""
        return self.process is not None and self.process.poll() is None

    def ended(self) -> int | None:
        """The exit status if the current incarnation has ended unnoticed, recording it."""
        if self.process is None or self.process.poll() is None:
            return None
        status = self.process.returncode
        self.exits.append((self.incarnation, status))
        self.process = None
        return status

    def url(self, within: float = STARTUP_S) -> str:
        """The sidecar's base URL, read from the log once it is listening."""
        deadline = time.monotonic() + within
        while self._url is None:
            for line in self.log_path.read_text(errors="replace").splitlines():
                if '"sidecar_listening"' in line:
                    self._url = str(json.loads(line)["url"])
                    break
            else:
                if not self.alive:
                    raise RuntimeError(f"{self.name} exited: {self.logs()[-2000:]}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name}'s sidecar did not start")
                time.sleep(0.05)
        return self._url

    def probe(self, path: str = "/health", within: float = 2.0) -> Probe:
        """GET `path` from the sidecar."""
        try:
            with urllib.request.urlopen(self.url() + path, timeout=within) as response:
                return Probe(path, response.status, response.read().decode())
        except urllib.error.HTTPError as error:
            return Probe(path, error.code, error.read().decode())

    def wait_healthy(self, within: float = STARTUP_S) -> None:
        """Wait until ``/health`` answers 200."""
        deadline = time.monotonic() + within
        while True:
            try:
                if self.probe().status == 200:
                    return
            except (OSError, urllib.error.URLError):
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} is not healthy: {self.logs()[-2000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the current incarnation, as a host failure or OOM kill would."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.exits.append((self.incarnation, self.process.returncode))
        self.process = None

    def terminate(self, within: float = 30.0) -> int:
        """SIGTERM (a drain) and wait; the exit status (SIGKILL after `within`)."""
        if self.process is None:
            raise RuntimeError(f"{self.name} is not running")
        self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(within)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            status = -signal.SIGKILL
        self.exits.append((self.incarnation, status))
        self.process = None
        return status


def consumer_environment(base: dict[str, str], **settings: str) -> dict[str, str]:
    """The child's environment: this one's PATH and Python, `base`, then `settings`."""
    # PYTHONPATH too: the child runs the code under test, not an installed copy.
    keep = {
        k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "TMPDIR", "PYTHONPATH"}
    }
    return {**keep, "PYTHONUNBUFFERED": "1", **base, **settings}
