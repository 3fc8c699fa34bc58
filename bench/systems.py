"""The two systems under test, each started as a process and awaited until ready.

`illustrator`: the service's own consumer, ``python -m consumer run`` with
``MODEL_PATH=builtin:blank``. `baseline`: :mod:`bench.baseline`. Both get the
same queue, topic and bucket and the same simulated GPU time per job.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from bench.procs import LOOPBACK, Child, Children, base_environment, free_port, wait_until
from consumer.cli.local_aws import SandboxResources
from pipeline.api.config import BUILTIN_BLANK

READY_TIMEOUT_S = 90.0
ILLUSTRATOR = "illustrator"
BASELINE = "baseline"

Launcher = Callable[[Children, SandboxResources, int, int], Child]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def start_consumer(
    children: Children,
    stack: SandboxResources,
    latency_ms: int,
    index: int,
    *,
    extra_env: dict[str, str] | None = None,
    argv: list[str] | None = None,
    name: str = ILLUSTRATOR,
) -> Child:
    """Start one consumer on `stack` (not yet awaited); see :func:`wait_ready`.

    `extra_env` adds settings, `argv` replaces ``python -m consumer run``."""
    port = free_port()
    env = base_environment(
        {
            **stack.environment(),
            "SQS_DLQ_URL": stack.dlq_url,
            "MODEL_PATH": BUILTIN_BLANK,
            "BLANK_LATENCY_MS": str(latency_ms),
            "HEALTH_HOST": LOOPBACK,
            "HEALTH_PORT": str(port),
            "LOG_LEVEL": "warning",
            "LOG_FORMAT": "json",
            "WORKER_ID": f"bench-{index}",
            "DRAIN_TIMEOUT_S": "10",
            "AUTH_ENABLED": "false",
            "EC2_LIFECYCLE_WATCH": "false",
            "MODEL_CACHE_DIR": str(children.log_dir / "model-cache"),
            **(extra_env or {}),
        }
    )
    argv = argv or [sys.executable, "-m", "consumer", "run"]
    child = children.start(f"{name}-{latency_ms}ms-{index}", argv, env)
    child.ready_check = lambda: _healthy(f"http://{LOOPBACK}:{port}/health")
    return child


def start_baseline(
    children: Children, stack: SandboxResources, latency_ms: int, index: int
) -> Child:
    """Start the sequential baseline on `stack` (not yet awaited)."""
    ready_file = children.log_dir / f"{BASELINE}-{latency_ms}ms-{index}.ready"
    ready_file.unlink(missing_ok=True)
    env = base_environment(
        {
            **stack.environment(),
            "BLANK_LATENCY_MS": str(latency_ms),
            "WORKER_ID": f"baseline-{index}",
            "BENCH_READY_FILE": str(ready_file),
        }
    )
    argv = [sys.executable, "-m", "bench.baseline"]
    child = children.start(f"{BASELINE}-{latency_ms}ms-{index}", argv, env)
    child.ready_check = Path(ready_file).exists
    return child


def wait_ready(child: Child) -> None:
    """Block until `child` is ready to take jobs (bounded)."""
    wait_until(child.ready_check, child, READY_TIMEOUT_S)


LAUNCHERS: dict[str, Launcher] = {ILLUSTRATOR: start_consumer, BASELINE: start_baseline}
