"""The queue path: how busy the consumer keeps the GPU, against the baseline.

For each simulated job length the consumer and then the baseline drain the
same number of jobs from the same queue. The figure is the GPU-busy
fraction: jobs x simulated time over the wall time from the first request
sent to the last completion event received.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from typing import Any

from PIL import Image

from bench import micro
from bench.endpoint import closes_connections, fresh_stack, with_fresh_queue
from bench.measure import (
    CpuMeter,
    lone_overheads_ms,
    stage_ms,
    summary,
    timed_batch,
    timing_overheads_ms,
)
from bench.procs import Child, Children
from bench.systems import BASELINE, ILLUSTRATOR, LAUNCHERS, wait_ready
from bench.workload import EventCollector, job_ids, upload_avatar
from consumer.cli.local_aws import SandboxResources

# The targets for the GPU-busy fraction, by simulated job length (ms).
TARGETS = {50: 0.95, 500: 0.99}
MIB = 2**20


@dataclass(frozen=True)
class QueueConfig:
    """How many jobs, of which lengths and sizes."""

    jobs: int = 200
    lengths_ms: tuple[int, ...] = (50, 500)
    lone_jobs: int = 20
    side: int = 1024
    avatar_side: int = 512


def batch_timeout_s(jobs: int, latency_ms: int) -> float:
    """Generous but finite: a second per job beyond its generation, plus start-up."""
    return 120 + jobs * (latency_ms / 1000 + 1.0)


def check_output(stack: SandboxResources, event: dict[str, Any]) -> dict[str, Any]:
    """Whether one event's PNG is where it says, with the right type and size."""
    uri = event["data"][0]["s3_uri"]
    key = uri.removeprefix(f"s3://{stack.bucket}/")
    response = stack.client("s3").get_object(Bucket=stack.bucket, Key=key)
    with Image.open(io.BytesIO(response["Body"].read())) as image:
        return {
            "key": key,
            "content_type": response.get("ContentType"),
            "format": image.format,
            "size": list(image.size),
        }


def _figures(system: str, latency_ms: int, jobs: int, wall_s: float) -> dict[str, Any]:
    busy_s = jobs * latency_ms / 1000
    return {
        "system": system,
        "latency_ms": latency_ms,
        "jobs": jobs,
        "wall_s": round(wall_s, 3),
        "busy_fraction": round(busy_s / wall_s, 4),
        "gap_per_job_ms": round((wall_s - busy_s) / jobs * 1000, 1),
        "throughput_jobs_s": round(jobs / wall_s, 2),
    }


def _memory(child: Child) -> dict[str, Any]:
    return {
        "peak_rss_mb": round(child.peak_rss_bytes() / MIB, 1),
        "torch_loaded": child.has_loaded("libtorch"),
    }


def run_system(
    children: Children,
    moto: Child,
    stack: SandboxResources,
    system: str,
    latency_ms: int,
    config: QueueConfig,
) -> dict[str, Any]:
    """Start `system` on a queue of its own, time a batch and then lone jobs
    through it, stop it."""
    stack = with_fresh_queue(stack)
    child = LAUNCHERS[system](children, stack, latency_ms, 0)
    wait_ready(child)
    prefix = f"{system}-{latency_ms}"
    ids = job_ids(prefix, config.jobs)
    with EventCollector(stack) as collector:
        meter = CpuMeter({"moto": moto, system: child})
        batch = timed_batch(
            stack, collector, ids, config.side, batch_timeout_s(len(ids), latency_ms)
        )
        cpu, machine_busy = meter.since(), meter.machine_cores_busy()
        lone_ids = job_ids(f"{prefix}-lone", config.lone_jobs)
        lone = lone_overheads_ms(stack, collector, lone_ids, config.side, latency_ms)
        duplicates = collector.duplicates
    memory = _memory(child)
    exit_status = children.stop(child)
    succeeded = [e for e in batch.events if e.get("status") == "succeeded"]
    return {
        **_figures(system, latency_ms, len(ids), batch.wall_s),
        "succeeded": len(succeeded),
        "failed": batch.count("failed"),
        "duplicates": duplicates,
        "overhead_ms": summary(timing_overheads_ms(batch.events)),
        "generate_ms": summary(stage_ms(batch.events, "generate")),
        "lone_overhead_ms": summary(lone),
        **memory,
        "cpu_s": cpu,
        "machine_cores_busy": machine_busy,
        "exit_status": exit_status,
        "output_check": check_output(stack, succeeded[0]) if succeeded else None,
    }


def compare(ours: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """Ours against the baseline at one job length, and against the target."""
    latency = int(ours["latency_ms"])
    target = TARGETS.get(latency)
    busy = float(ours["busy_fraction"])
    return {
        "latency_ms": latency,
        "ours": busy,
        "baseline": baseline["busy_fraction"],
        "ratio": round(busy / float(baseline["busy_fraction"]), 3),
        "target": target,
        "met": None if target is None else busy >= target,
        "short_by": None if target is None else round(max(0.0, target - busy), 4),
    }


def run(children: Children, moto: Child, url: str, config: QueueConfig) -> dict[str, Any]:
    """Every job length: ours then the baseline, sharing a fresh topic, bucket and
    observer, each on a request queue of its own (see :func:`with_fresh_queue`)."""
    runs, comparisons = [], []
    pieces: dict[str, float] = {}
    for latency_ms in config.lengths_ms:
        stack = fresh_stack(url)
        upload_avatar(stack, config.avatar_side)
        if not pieces:
            pieces = micro.measure(stack, config.side, config.avatar_side)
        ours = run_system(children, moto, stack, ILLUSTRATOR, latency_ms, config)
        print_run(ours)
        baseline = run_system(children, moto, stack, BASELINE, latency_ms, config)
        print_run(baseline)
        runs += [ours, baseline]
        comparisons.append(compare(ours, baseline))
        print_comparison(comparisons[-1])
    return {
        "config": asdict(config),
        "micro_ms": pieces,
        "moto_closes_connections": closes_connections(url),
        "runs": runs,
        "comparisons": comparisons,
    }


def print_run(result: dict[str, Any]) -> None:
    """One line per system and job length."""
    over, lone = result["overhead_ms"], result["lone_overhead_ms"]
    print(
        f"  {result['system']:<11} {result['latency_ms']:>4} ms x {result['jobs']}: "
        f"wall {result['wall_s']:.2f} s, GPU busy {result['busy_fraction']:.3f}, "
        f"overhead p50/p95 {over['p50']:.0f}/{over['p95']:.0f} ms (lone jobs "
        f"{lone['p50']:.0f}/{lone['p95']:.0f} ms), peak RSS {result['peak_rss_mb']:.0f} MB, "
        f"{result['succeeded']} ok, {result['failed']} failed",
        flush=True,
    )


def print_comparison(comparison: dict[str, Any]) -> None:
    """Ours over the baseline, and the target."""
    target = comparison["target"]
    verdict = (
        "" if target is None else (" (target met)" if comparison["met"] else " (target MISSED)")
    )
    print(
        f"  {comparison['latency_ms']} ms: ours {comparison['ours']:.3f} / baseline "
        f"{comparison['baseline']:.3f} = {comparison['ratio']:.2f}x; target {target}{verdict}",
        flush=True,
    )
