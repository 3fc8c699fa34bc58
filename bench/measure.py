"""What a timed batch yields: wall time, per-job figures, CPU time per process."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import psutil

from bench.procs import Child
from bench.workload import Arrival, EventCollector, send_jobs
from consumer.cli.local_aws import SandboxResources


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0-100) by linear interpolation; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float]) -> dict[str, float]:
    """p50, p95 and max of `values`, rounded to 0.1."""
    return {
        "p50": round(percentile(values, 50), 1),
        "p95": round(percentile(values, 95), 1),
        "max": round(max(values), 1) if values else math.nan,
    }


def _machine_busy_s() -> float:
    """CPU seconds the whole machine has spent not idle, over all cores."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


class CpuMeter:
    """CPU seconds used by named children and by the harness since creation,
    and by the whole machine (which shows load from anything else running)."""

    def __init__(self, children: Mapping[str, Child]) -> None:
        self._children = dict(children)
        self._harness = psutil.Process()
        self._start = self._snapshot()
        self._machine_start = _machine_busy_s()
        self._wall_start = time.monotonic()

    def _snapshot(self) -> dict[str, float]:
        seconds = {name: child.cpu_seconds() for name, child in self._children.items()}
        times = self._harness.cpu_times()
        seconds["harness"] = float(times.user + times.system)
        return seconds

    def since(self) -> dict[str, float]:
        """CPU seconds per process since the meter was made."""
        now = self._snapshot()
        return {name: round(now[name] - self._start[name], 2) for name in now}

    def machine_cores_busy(self) -> float:
        """Cores busy on average across the machine since the meter was made."""
        wall = time.monotonic() - self._wall_start
        return round((_machine_busy_s() - self._machine_start) / wall, 2) if wall > 0 else 0.0


@dataclass
class Batch:
    """A batch of jobs sent at once and all their events received."""

    sent: dict[str, float]
    arrivals: dict[str, Arrival]
    wall_s: float

    @property
    def events(self) -> list[dict[str, object]]:
        """The completion events, in no particular order."""
        return [arrival.event for arrival in self.arrivals.values()]

    def count(self, status: str) -> int:
        """How many events have `status`."""
        return sum(1 for event in self.events if event.get("status") == status)


def timed_batch(
    stack: SandboxResources,
    collector: EventCollector,
    ids: Sequence[str],
    side: int,
    timeout_s: float,
) -> Batch:
    """Send every job, wait for every event; wall time from first send to last event."""
    first_sent = time.monotonic()
    sent = send_jobs(stack, ids, side)
    arrivals = collector.wait_for(ids, timeout_s)
    last = max(arrival.at for arrival in arrivals.values())
    return Batch(sent, arrivals, last - first_sent)


def lone_overheads_ms(
    stack: SandboxResources,
    collector: EventCollector,
    ids: Sequence[str],
    side: int,
    latency_ms: int,
) -> list[float]:
    """End-to-end time of jobs sent one at a time, less the generation time."""
    overheads = []
    for job_id in ids:
        sent = send_jobs(stack, [job_id], side)[job_id]
        arrival = collector.wait_for([job_id], timeout_s=30 + latency_ms / 1000)[job_id]
        overheads.append((arrival.at - sent) * 1000 - latency_ms)
    return overheads


def stage_ms(events: Sequence[Mapping[str, object]], stage: str) -> list[float]:
    """Per event that timed it, the milliseconds of one stage (``generate``...)."""
    found = []
    for event in events:
        timings = event.get("timings_ms")
        if isinstance(timings, dict) and stage in timings:
            found.append(float(timings[stage]))
    return found


def timing_overheads_ms(events: Sequence[Mapping[str, object]]) -> list[float]:
    """Per event, ``timings_ms.total - timings_ms.generate``: time beyond generation."""
    found = []
    for event in events:
        timings = event.get("timings_ms")
        if isinstance(timings, dict) and "total" in timings and "generate" in timings:
            found.append(float(timings["total"] - timings["generate"]))
    return found
