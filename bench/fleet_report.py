"""The fleet simulation's cases, figures, goals, plot and docs section."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from bench import fleet_traces as traces
from bench.fleet_model import HOUR, Group, InstanceType, Result, Simulation
from bench.fleet_policy import BEFORE, TEMPLATE, Policy

BEGIN, END = "<!-- fleet_sim:begin -->", "<!-- fleet_sim:end -->"

# us-east-1 Linux list prices in USD per hour (Spot: a typical price); update
# before use. The H100 is one eighth of a p5.48xlarge at its list price.
G5 = InstanceType("g5.xlarge", 1, on_demand=1.006, spot=0.45)
G6 = InstanceType("g6.xlarge", 1, on_demand=0.805, spot=0.38, speed=1.1)
G5_12 = InstanceType("g5.12xlarge", 4, on_demand=5.672, spot=2.30)
H100 = InstanceType("H100 (p5.48xlarge / 8)", 1, on_demand=6.88, spot=2.75)
INSTANCE_TYPES = (G5, G6, G5_12, H100)


@dataclass(frozen=True)
class Speed:
    """Seconds per picture on an instance type."""

    label: str
    low: float
    high: float
    kind: InstanceType


@dataclass(frozen=True)
class Design:
    """A policy and its groups, for one instance type."""

    name: str
    policy: Policy
    groups: tuple[Group, ...]


SPEEDS = (Speed("15-30 s", 15, 30, G5), Speed("2-3 s", 2, 3, H100))
CHOSEN = "warm pool + Spot overflow"


def designs(kind: InstanceType, policy: Policy = TEMPLATE, warm_max: int = 16) -> list[Design]:
    """Today's policy, and the new one without, with a pre-baked, and with a warm start."""
    return [
        Design("today", BEFORE, (Group(kind, max_size=8),)),
        Design("wait objective, cold", policy, (Group(kind, max_size=warm_max),)),
        Design(
            "pre-baked Spot", replace(policy, cold_start_s=300.0), (Group(kind, max_size=warm_max),)
        ),
        Design(
            CHOSEN,
            policy,
            (Group(kind, max_size=warm_max, warm_pool=1), Group(kind, max_size=8, overflow=True)),
        ),
    ]


def trace_set(seed: int = 7) -> dict[str, list[float]]:
    """The three traces, the same for every case."""
    rng = random.Random(seed)
    return {
        "steady 300/h, 8 h": traces.steady(300, 8, rng),
        "daily, peak 400/h": traces.daily(400, rng),
        "book of 300 at once": traces.book(300),
    }


def simulate(arrivals: Sequence[float], speed: Speed, design: Design, seed: int = 7) -> Result:
    """One case."""
    gen = traces.generation_times(len(arrivals), speed.low, speed.high, random.Random(seed))
    return Simulation(arrivals, gen, design.groups, design.policy).run()


def run_all(
    policy: Policy = TEMPLATE, warm_max: int = 16, speeds: Sequence[Speed] = SPEEDS
) -> tuple[list[dict[str, object]], dict[tuple[str, str, str], Result]]:
    """Every case: rows for the table, and the runs by (speed, trace, design)."""
    rows: list[dict[str, object]] = []
    runs: dict[tuple[str, str, str], Result] = {}
    for speed in speeds:
        # SecondsPerPicture is set to the GPU's speed; the measured mean
        # takes over as soon as jobs finish.
        tuned = replace(policy, seconds_per_picture=(speed.low + speed.high) / 2)
        for trace, arrivals in trace_set().items():
            for design in designs(speed.kind, tuned, warm_max):
                result = simulate(arrivals, speed, design)
                runs[speed.label, trace, design.name] = result
                rows.append(row(speed, trace, design.name, result))
    return rows, runs


def row(speed: Speed, trace: str, design: str, result: Result) -> dict[str, object]:
    """The figures of one case."""
    median, spread = result.spread()
    return {
        "speed": speed.label,
        "type": speed.kind.name,
        "trace": trace,
        "design": design,
        "pictures": result.pictures,
        "p50": result.percentile(50),
        "p95": result.percentile(95),
        "gpus": median,
        "spread": spread,
        "gpu_hours": result.gpu_hours,
        "on_demand": result.cost_per_1000(spot=False),
        "spot": result.cost_per_1000(spot=True),
        "done": result.done,
    }


def table(rows: list[dict[str, object]]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| s / picture | trace | design | wait p50 | wait p95 | GPUs after 1 h | GPU-hours"
        " | USD / 1000, On-Demand | USD / 1000, Spot | book done |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        gpus = f"{r['gpus']:.0f} ± {r['spread']}" if str(r["trace"]).startswith("steady") else "-"
        book = str(r["trace"]).startswith("book")
        done = f"{float(r['done']) / 60:.1f} min" if book else "-"  # type: ignore[arg-type]
        lines.append(
            f"| {r['speed']} ({r['type']}) | {r['trace']} | {r['design']} | {r['p50']:.0f} s"
            f" | {r['p95']:.0f} s | {gpus} | {r['gpu_hours']:.1f} | {r['on_demand']:.2f}"
            f" | {r['spot']:.2f} | {done} |"
        )
    return "\n".join(lines)


def _find(rows: list[dict[str, object]], speed: str, trace: str, design: str) -> dict[str, object]:
    return next(r for r in rows if (r["speed"], r["trace"], r["design"]) == (speed, trace, design))


def goals(rows: list[dict[str, object]]) -> list[tuple[str, bool, str]]:
    """The goals at 15-30 s per picture: (goal, met, what was measured)."""
    steady = _find(rows, "15-30 s", "steady 300/h, 8 h", CHOSEN)
    book = _find(rows, "15-30 s", "book of 300 at once", CHOSEN)
    today = _find(rows, "15-30 s", "book of 300 at once", "today")
    p95, spread = float(steady["p95"]), int(steady["spread"])  # type: ignore[arg-type]
    done = float(book["done"]) / 60  # type: ignore[arg-type]
    cost, before = float(book["on_demand"]), float(today["on_demand"])  # type: ignore[arg-type]
    return [
        ("steady trace: p95 wait at most 3 min", p95 <= 180, f"{p95:.0f} s"),
        (
            "steady trace: GPUs within ±1 of the median after the first hour",
            spread <= 1,
            f"{steady['gpus']:.0f} ± {spread}",
        ),
        ("book of 300: done in at most 15 min", done <= 15, f"{done:.1f} min"),
        (
            "book of 300: USD per 1000 at most today's (On-Demand)",
            cost <= before,
            f"{cost:.2f} against {before:.2f}",
        ),
    ]


def goals_text(rows: list[dict[str, object]]) -> str:
    """The goals as a Markdown list."""
    return "\n".join(
        f"- {goal}: **{'met' if met else 'not met'}** ({measured})"
        for goal, met, measured in goals(rows)
    )


def plot(runs: dict[tuple[str, str, str], Result], path: Path) -> Path:
    """GPUs in service over time, today and the chosen design, per speed and trace."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server or in CI
    import matplotlib.pyplot as plt

    speeds = sorted({k[0] for k in runs}, key=[s.label for s in SPEEDS].index)
    trace_names = list(dict.fromkeys(k[1] for k in runs))
    fig, axes = plt.subplots(
        len(speeds), len(trace_names), figsize=(14, 3.6 * len(speeds)), dpi=100, squeeze=False
    )
    for r, speed in enumerate(speeds):
        for c, trace in enumerate(trace_names):
            ax = axes[r][c]
            for design, color in (("today", "tab:red"), (CHOSEN, "tab:blue")):
                result = runs[speed, trace, design]
                hours = [s[0] / HOUR for s in result.samples]
                ax.step(
                    hours,
                    [s[2] for s in result.samples],
                    where="post",
                    color=color,
                    label=f"{design}: p95 wait {result.percentile(95) / 60:.1f} min",
                )
            ax.set_title(f"{trace}, {speed} per picture", fontsize=9)
            ax.set_xlabel("hours")
            ax.set_ylabel("GPUs in service")
            ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_docs(text: str, path: Path) -> None:
    """Replace the simulation's section of `path` (between its markers) with `text`."""
    page = path.read_text(encoding="utf-8")
    head, rest = page.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}", encoding="utf-8")
