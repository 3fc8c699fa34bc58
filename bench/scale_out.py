"""Scale-out: several consumers on one queue, throughput against their number.

Each consumer stands for one GPU machine; here they all share two cores with
moto's server and the harness, so the CPU time each process spends per job
is recorded too: it says what stops the line from rising.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from bench.endpoint import fresh_stack
from bench.measure import CpuMeter, timed_batch
from bench.procs import Child, Children
from bench.queue_path import batch_timeout_s
from bench.systems import start_consumer, wait_ready
from bench.workload import EventCollector, job_ids, upload_avatar

MIB = 2**20


@dataclass(frozen=True)
class ScaleConfig:
    """How many consumers, jobs, and how long each job's simulated GPU time."""

    consumers: tuple[int, ...] = (1, 2, 4)
    jobs: int = 200
    latency_ms: int = 50
    side: int = 1024
    avatar_side: int = 512


def cpu_shares(cpu_s: dict[str, float], jobs: int, wall_s: float) -> dict[str, float]:
    """CPU milliseconds per job of moto, of all consumers, of the harness; and
    the cores busy on average during the batch."""
    consumers = sum(v for k, v in cpu_s.items() if k not in ("moto", "harness"))
    return {
        "moto_ms_per_job": round(cpu_s.get("moto", 0.0) / jobs * 1000, 1),
        "consumers_ms_per_job": round(consumers / jobs * 1000, 1),
        "harness_ms_per_job": round(cpu_s.get("harness", 0.0) / jobs * 1000, 1),
        "cores_busy": round(sum(cpu_s.values()) / wall_s, 2),
    }


def run_one(
    children: Children, moto: Child, url: str, count: int, config: ScaleConfig
) -> dict[str, Any]:
    """`count` consumers drain one batch from a fresh queue."""
    stack = fresh_stack(url)
    upload_avatar(stack, config.avatar_side)
    started = [start_consumer(children, stack, config.latency_ms, n) for n in range(count)]
    for child in started:
        wait_ready(child)
    ids = job_ids(f"scale-{count}", config.jobs)
    with EventCollector(stack) as collector:
        meter = CpuMeter({"moto": moto, **{child.name: child for child in started}})
        timeout = batch_timeout_s(len(ids), config.latency_ms)
        batch = timed_batch(stack, collector, ids, config.side, timeout)
        cpu, machine_busy = meter.since(), meter.machine_cores_busy()
    peak_rss = max(child.peak_rss_bytes() for child in started)
    statuses = children.stop_many(started)
    per_worker = Counter(str(event.get("worker_id")) for event in batch.events)
    throughput = len(ids) / batch.wall_s
    return {
        "consumers": count,
        "jobs": len(ids),
        "latency_ms": config.latency_ms,
        "wall_s": round(batch.wall_s, 3),
        "throughput_jobs_s": round(throughput, 2),
        "gpu_bound_jobs_s": round(count * 1000 / config.latency_ms, 2),
        "gpu_busy_per_consumer": round(throughput * config.latency_ms / 1000 / count, 4),
        "succeeded": batch.count("succeeded"),
        "failed": batch.count("failed"),
        "jobs_per_consumer": dict(sorted(per_worker.items())),
        "cpu_s": cpu,
        **cpu_shares(cpu, len(ids), batch.wall_s),
        "machine_cores_busy": machine_busy,
        "peak_rss_mb": round(peak_rss / MIB, 1),
        "exit_statuses": statuses,
    }


def run(children: Children, moto: Child, url: str, config: ScaleConfig) -> dict[str, Any]:
    """Every consumer count in turn, each on a queue of its own."""
    results = []
    for count in config.consumers:
        result = run_one(children, moto, url, count, config)
        results.append(result)
        print(
            f"  {count} consumer(s): {result['throughput_jobs_s']:.1f} jobs/s "
            f"(GPU-bound {result['gpu_bound_jobs_s']:.0f}), {result['cores_busy']:.2f} of "
            f"{os.cpu_count()} cores busy ({result['machine_cores_busy']:.2f} with everything "
            f"else on the machine), CPU per job: moto {result['moto_ms_per_job']:.0f} ms, "
            f"consumers {result['consumers_ms_per_job']:.0f} ms, "
            f"harness {result['harness_ms_per_job']:.0f} ms",
            flush=True,
        )
    return {"config": asdict(config), "cores": os.cpu_count(), "runs": results}
