"""The two figures, drawn from the results JSON with matplotlib (Agg, PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server or in CI

import matplotlib.pyplot as plt

from bench.systems import BASELINE, ILLUSTRATOR

BUSY_PNG = "gpu_busy.png"
SCALE_PNG = "scale_out.png"
LABELS = {ILLUSTRATOR: "illustrator (this service)", BASELINE: "sequential boto3 loop"}


def gpu_busy(queue: dict[str, Any], path: Path) -> Path:
    """GPU-busy fraction against job length, ours and the baseline, with targets."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for system, marker in ((ILLUSTRATOR, "o"), (BASELINE, "s")):
        runs = sorted(
            (r for r in queue["runs"] if r["system"] == system), key=lambda r: r["latency_ms"]
        )
        xs = [r["latency_ms"] for r in runs]
        ys = [r["busy_fraction"] for r in runs]
        ax.plot(xs, ys, marker=marker, label=LABELS[system])
        for x, y in zip(xs, ys, strict=True):
            ax.annotate(f"{y:.3f}", (x, y), textcoords="offset points", xytext=(6, -12))
    targets = [(c["latency_ms"], c["target"]) for c in queue["comparisons"] if c["target"]]
    if targets:
        ax.scatter(
            [x for x, _ in targets],
            [y for _, y in targets],
            marker="_",
            s=400,
            color="red",
            label="target",
        )
    ax.set_xscale("log")
    ax.set_xticks([c["latency_ms"] for c in queue["comparisons"]])
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.get_xaxis().set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("simulated GPU time per job (ms)")
    ax.set_ylabel("GPU-busy fraction")
    jobs = queue["config"]["jobs"]
    ax.set_title(f"GPU-busy fraction, {jobs} jobs per run (moto on loopback)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)


def scale_out(scale: dict[str, Any], path: Path) -> Path:
    """Throughput against consumers, with the GPU-bound and CPU-bound ceilings."""
    runs = sorted(scale["runs"], key=lambda r: r["consumers"])
    xs = [r["consumers"] for r in runs]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    ax.plot(xs, [r["throughput_jobs_s"] for r in runs], marker="o", label="measured")
    ax.plot(xs, [r["gpu_bound_jobs_s"] for r in runs], "--", label="GPU-bound (linear)")
    ax.plot(
        xs, [cpu_ceiling(r, scale["cores"]) for r in runs], ":", label="CPU-bound (this machine)"
    )
    for run in runs:
        ax.annotate(
            f"machine: {run.get('machine_cores_busy', run['cores_busy']):.1f} cores busy",
            (run["consumers"], run["throughput_jobs_s"]),
            textcoords="offset points",
            xytext=(6, -14),
            fontsize=8,
        )
    ax.set_xticks(xs)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("consumers on one queue")
    ax.set_ylabel("jobs / s")
    latency = scale["config"]["latency_ms"]
    ax.set_title(f"Scale-out, {latency} ms jobs, {scale['cores']} cores shared with moto")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left")
    return _save(fig, path)


def cpu_ceiling(run: dict[str, Any], cores: int) -> float:
    """Jobs/s the machine's cores could carry at the CPU cost per job measured."""
    per_job = run["moto_ms_per_job"] + run["consumers_ms_per_job"] + run["harness_ms_per_job"]
    return cores * 1000 / per_job if per_job else float("nan")


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def draw(results: dict[str, Any], directory: Path) -> list[Path]:
    """Every figure whose results are present; the paths written."""
    drawn = []
    if "queue_path" in results:
        drawn.append(gpu_busy(results["queue_path"], directory / BUSY_PNG))
    if "scale_out" in results:
        drawn.append(scale_out(results["scale_out"], directory / SCALE_PNG))
    return drawn
