"""Cancellation end to end: `python -m consumer run` on builtin:tiny against moto.

One worker process takes, in turn, a job cancelled before it is taken, one
cancelled while it waits behind a long generation, the long one cancelled
while it generates, and a job cancelled after it succeeded; the worker goes
on to the next request each time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

from consumer.contract.keys import cancel_key
from tests.consumer.service.test_process import (
    TINY,
    _exit,
    _free_port,
    _health,
    _log_events,
    consumer,
)
from tests.support.aws import Stack
from tests.support.helpers import Observer, eventually, memory

POLL_S = 1.0
SHORT = {"num_inference_steps": 2, "width": 64, "height": 64}
# At the size the warm-up drew, so every step takes its steady time.
LONG = {"num_inference_steps": 150, "width": 64, "height": 64}


def _cancel(stack: Stack, job_id: str) -> float:
    """Write the marker as AutoBio does; returns the wall-clock time it was written."""
    key = cancel_key("cancellations/", "user1", job_id)
    stack.client("s3").put_object(Bucket=stack.bucket, Key=key, Body=b"")
    return time.time()


def _logged(reader: IO[bytes], name: str, job_id: str) -> dict[str, Any] | None:
    found = [e for e in _log_events(reader) if e["event"] == name and e.get("job_id") == job_id]
    return found[0] if found else None


def _at(entry: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(entry["timestamp"]).timestamp()


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def _status(observer: Observer, job_id: str) -> list[str]:
    return [e["status"] for e in observer.events if e["job_id"] == job_id]


def _mine(stack: Stack, job_id: str) -> list[str]:
    return [key for key in stack.outputs() if job_id in key]


async def test_cancels_before_while_waiting_while_running_and_after_success(
    stack: Stack, tmp_path: Path
) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    port = _free_port()
    # Warmed up, so the long job's steps take their steady time from the first.
    env = {**TINY, "WARMUP": "true", "CANCEL_POLL_S": str(POLL_S), "HEALTH_PORT": str(port)}
    with consumer(tmp_path, **env) as (process, reader):
        await eventually(lambda: _health(port) == 200, within=90, what="the model loaded")

        # Before it is taken: never drawn.
        _cancel(stack, "pre")
        stack.send(memory("pre", **SHORT))
        await observer.wait(1, within=30)
        assert _status(observer, "pre") == ["cancelled"]
        assert _logged(reader, "generation_started", "pre") is None

        # While it waits behind a long generation: never begins.
        stack.send(memory("long", **LONG))
        await eventually(
            lambda: _logged(reader, "generation_started", "long"), within=30, what="long begins"
        )
        stack.send(memory("behind", **SHORT))
        await eventually(lambda: stack.queue_counts() == (0, 2), what="behind prefetched")
        _cancel(stack, "behind")
        await eventually(
            lambda: _logged(reader, "cancel_seen", "behind"), within=POLL_S * 3, what="seen"
        )
        assert _logged(reader, "job_succeeded", "long") is None  # still generating

        # While it generates: stopped at its next step.
        written = _cancel(stack, "long")
        cancelled = await eventually(
            lambda: _logged(reader, "job_cancelled", "long"), within=30, what="long cancelled"
        )
        began = _logged(reader, "generation_started", "long")
        assert began is not None
        await observer.wait(3, within=30)
        assert _status(observer, "behind") == ["cancelled"]
        assert _status(observer, "long") == ["cancelled"]
        assert _logged(reader, "generation_started", "behind") is None
        # "... generation stopped after step N of 150": the steps it ran until the stop.
        steps = int(cancelled["reason"].split("after step ")[1].split(" of ")[0])
        step_s = (_at(cancelled) - _at(began)) / steps
        stop_s = _at(cancelled) - written
        print(f"cancel to stop: {stop_s:.2f} s (poll {POLL_S} s; {steps} steps of {step_s:.3f} s)")
        # A poll and a step, plus a HEAD, an SNS publish and an SQS delete on loopback.
        assert stop_s < POLL_S + step_s + 1.0
        assert steps < 150

        # After success: nothing changes; a redelivery is reused.
        stack.send(memory("done", **SHORT))
        await observer.wait(4, within=30)
        assert _status(observer, "done") == ["succeeded"]
        _cancel(stack, "done")
        stack.send(memory("done", **SHORT))
        await observer.wait(5, within=30)
        assert _status(observer, "done") == ["succeeded", "succeeded"]
        assert observer.events[-1]["reused"] is True

        metrics = await asyncio.to_thread(_metrics, port)
        process.send_signal(signal.SIGTERM)
        assert await _exit(process) == 0
        emf = [e for e in _log_events(reader) if e["event"] == "job_metrics"]

    cancelled_attributes = [a for a in observer.attributes if a["status"] == "cancelled"]
    assert len(cancelled_attributes) == 3
    for event in observer.events:
        if event["status"] == "cancelled":
            assert "data" not in event
            assert "error" not in event
    assert stack.outputs() == ["generated/user1/memory_done.png"]
    assert _mine(stack, "long") == []
    assert stack.queue_counts() == (0, 0)
    assert 'illustrator_jobs_total{error_code="",kind="memory",status="cancelled"} 3.0' in metrics
    assert sorted(e["Status"] for e in emf) == ["cancelled"] * 3 + ["succeeded"] * 2
