"""Child processes of the benchmark: started apart, measured, always stopped.

Each child runs in its own session so that a Ctrl-C at the terminal reaches
only the harness, which then stops the children in order (a consumer gets
SIGTERM and drains). On Linux a child also gets SIGTERM if the harness dies
without cleaning up, so no moto server or consumer outlives a killed run.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import psutil

from consumer.cli.local_aws import SANDBOX_ENVIRONMENT

REPO_ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
# Only these are inherited from the harness's environment: a developer's AWS
# profile, `.env`-style settings or proxy variables must not steer a child
# anywhere but the moto server on loopback.
INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
_PR_SET_PDEATHSIG = 1


class ChildFailed(RuntimeError):
    """A child exited early or never became ready."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _aws_isolation() -> dict[str, str]:
    """Fake credentials and no AWS configuration files: nothing real is reachable."""
    return {
        **SANDBOX_ENVIRONMENT,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_PROXY": f"{LOOPBACK},localhost",
    }


@contextlib.contextmanager
def isolated_harness() -> Iterator[None]:
    """Give the harness's own boto3 clients the same fake, loopback-only setting;
    the environment is restored on exit."""
    saved = dict(os.environ)
    for name in [n for n in os.environ if n.startswith("AWS_") or n.lower().endswith("_proxy")]:
        del os.environ[name]
    os.environ.update(_aws_isolation())
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def base_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """A minimal environment for a child: loopback only, no AWS config files."""
    env = {name: os.environ[name] for name in INHERITED if name in os.environ}
    env.update(_aws_isolation())
    env.update(
        {
            "PYTHONPATH": str(REPO_ROOT),
            "PYTHONUNBUFFERED": "1",
            # Nothing may be fetched from a model hub: builtin models only.
            "HF_HUB_OFFLINE": "1",
        }
    )
    env.update(extra)
    return env


def _die_with_parent() -> None:
    """Runs in the child before exec: ask Linux for SIGTERM when the harness dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    """One started process, its log file, and how to measure and stop it."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    # Set by whoever starts the child: whether it is ready to take work.
    ready_check: Callable[[], bool] = field(default=lambda: True)
    handle: psutil.Process = field(init=False)
    terminated: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.handle = psutil.Process(self.popen.pid)

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.popen.pid

    def alive(self) -> bool:
        """Whether the child is still running."""
        return self.popen.poll() is None

    def cpu_seconds(self) -> float:
        """User plus system CPU time used so far (0 once it has exited)."""
        try:
            times = self.handle.cpu_times()
        except psutil.Error:
            return 0.0
        return float(times.user + times.system)

    def peak_rss_bytes(self) -> int:
        """The highest resident set size so far (Linux VmHWM, else current RSS)."""
        status = Path(f"/proc/{self.pid}/status")
        with contextlib.suppress(OSError):
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        try:
            return int(self.handle.memory_info().rss)
        except psutil.Error:
            return 0

    def has_loaded(self, library: str) -> bool:
        """Whether a shared library whose name contains `library` is mapped."""
        with contextlib.suppress(psutil.Error):
            return any(library in region.path for region in self.handle.memory_maps())
        return False

    def terminate(self) -> None:
        """SIGTERM, once: a second one could cut a consumer's drain short."""
        if self.alive() and not self.terminated:
            self.terminated = True
            self.send(signal.SIGTERM)

    def stop(self, grace_s: float) -> int | None:
        """SIGTERM, wait up to `grace_s`, then SIGKILL; the exit status."""
        self.terminate()
        try:
            return self.popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.send(signal.SIGKILL)
        try:
            return self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None

    def send(self, signum: int) -> None:
        """Send `signum` to the child's whole session."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signum)

    def log_tail(self, lines: int = 30) -> str:
        """The end of the child's combined stdout and stderr."""
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""


@dataclass
class Children:
    """Starts children and stops every one of them on exit, newest first."""

    log_dir: Path
    grace_s: float = 15.0
    started: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> Child:
        """Start `argv` with `env`, its output going to ``<log_dir>/<name>.log``."""
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=self.log_dir,  # never the repository: no `.env` is read
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        child = Child(name, popen, log_path)
        self.started.append(child)
        return child

    def stop(self, child: Child) -> int | None:
        """Stop one child now and forget it."""
        status = child.stop(self.grace_s)
        if child in self.started:
            self.started.remove(child)
        return status

    def stop_many(self, children: Sequence[Child]) -> list[int | None]:
        """Stop several children together: all are told at once, then awaited."""
        for child in children:
            child.terminate()
        return [self.stop(child) for child in children]

    def stop_all(self) -> None:
        """Stop every child still known, newest first, each in turn: a consumer
        drains while the moto server it talks to is still up."""
        for child in reversed(list(self.started)):
            self.stop(child)

    def __enter__(self) -> Children:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop_all()


def wait_until(
    ready: Callable[[], bool], child: Child, timeout_s: float, interval_s: float = 0.05
) -> None:
    """Poll `ready` until it holds; raise :class:`ChildFailed` if `child` dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        if not child.alive():
            raise ChildFailed(
                f"{child.name} exited with status {child.popen.returncode}:\n{child.log_tail()}"
            )
        time.sleep(interval_s)
    raise ChildFailed(f"{child.name} not ready after {timeout_s:.0f} s:\n{child.log_tail()}")
