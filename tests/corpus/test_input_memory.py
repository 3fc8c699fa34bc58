"""The worst accepted pictures through a running `builtin:tiny` worker, memory measured.

One `python -m consumer run` child on moto's server. Before each job its
peak resident memory (``VmHWM``) is reset to its resident memory; after the
job's event the peak says what the job added. The worst accepted PNG, JPEG
and WebP (largest pixel count at the widest allowed shape) are decoded in a
process of their own (:mod:`pipeline.api.preparer`; its own figures are
measured by ``test_worst_inputs.py``), so the worker itself adds at most
:data:`BOUND_MIB`: the picture's bytes and the prepared encoder input. A
picture beyond the allowed shape ends ``invalid_input``, and the same
worker goes on serving.

``pytest -s`` prints the figures.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.chaos.process import ConsumerProcess, consumer_environment
from tests.corpus.worst_pictures import (
    MIB,
    blocks,
    encode,
    peak_kib,
    reset_peak,
    resident_kib,
    worst_pictures,
)
from tests.support.aws import Stack
from tests.support.helpers import Observer, memory, png

ROOT = Path(__file__).resolve().parents[2]
BOUND_MIB = 64
USER = "mem-user"
JOB_WITHIN_S = 120.0


async def _run(
    stack: Stack, observer: Observer, process: ConsumerProcess, job_id: str, key: str
) -> tuple[dict[str, Any], float, float]:
    """Send one job on `key`; its event, the resident MiB before it and the peak MiB during it."""
    assert process.process is not None
    pid = process.process.pid
    reset_peak(pid)
    before = resident_kib(pid) / 1024
    stack.send(memory(job_id, USER, image_key=key, width=64, height=64))
    while True:
        events = await observer.wait(len(observer.events) + 1, within=JOB_WITHIN_S)
        mine = [e for e in events if e["job_id"] == job_id]
        if mine:
            return mine[0], before, peak_kib(pid) / 1024


async def test_worst_accepted_pictures_stay_within_the_memory_bound(
    stack: Stack, tmp_path: Path
) -> None:
    env = consumer_environment(
        stack.environment(),
        PYTHONPATH=os.environ.get("PYTHONPATH", str(ROOT)),
        MODEL_PATH="builtin:tiny",
        HEALTH_HOST="127.0.0.1",
        HEALTH_PORT="0",
        RETRY_BACKOFF_BASE_S="0",
        WORKER_ID="memory",
    )
    worker = ConsumerProcess("memory", env, tmp_path / "worker")
    observer = Observer(stack)
    stack.put_input(f"avatars/{USER}.png", png(48, 64))
    figures = []
    worker.start()
    try:
        worker.wait_healthy(within=120)
        # A first ordinary job loads what every job uses (the face detector).
        first, _, _ = await _run(stack, observer, worker, "warm", f"avatars/{USER}.png")
        assert first["status"] == "succeeded", first
        for worst in worst_pictures():
            key = f"avatars/{USER}/worst.{worst.extension}"
            stack.put_input(key, worst.data)
            event, before, peak = await _run(
                stack, observer, worker, f"worst-{worst.extension}", key
            )
            figures.append((worst, event, before, peak))
        wide = encode(blocks((900, 100)), "PNG")
        stack.put_input(f"avatars/{USER}/wide.png", wide)
        refused, _, _ = await _run(stack, observer, worker, "wide", f"avatars/{USER}/wide.png")
        after, _, _ = await _run(stack, observer, worker, "after", f"avatars/{USER}.png")
        alive = worker.alive
    finally:
        status = worker.terminate() if worker.alive else worker.ended()
    for worst, event, before, peak in figures:
        width, height = worst.size
        print(
            f"{worst.fmt:5} {width}x{height} {len(worst.data) / MIB:5.2f} MiB: "
            f"{event['status']:9} resident before {before:6.0f} MiB, peak {peak:6.0f} MiB, "
            f"added {peak - before:6.0f} MiB"
        )
    for worst, event, before, peak in figures:
        assert event["status"] == "succeeded", (worst.fmt, event)
        assert peak - before <= BOUND_MIB, (worst.fmt, before, peak)
    assert refused["status"] == "failed", refused
    assert refused["error"]["code"] == "invalid_input"
    assert "aspect" in refused["error"]["message"]
    assert after["status"] == "succeeded", after
    assert alive, worker.logs()[-3000:]
    assert status == 0
