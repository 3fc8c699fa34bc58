"""Discrete-event simulation of the worker group's scaling policy.

`python -m bench.fleet_sim` runs the policy of infra/illustrator.yaml against
three traces and prints (and with ``--docs`` writes into docs/operations.md)
the waits, GPU-hours and cost per 1000 pictures of each instance type, and
draws docs/fleet_sim.png.

The model, as the template configures the group:

- Requests wait in one FIFO queue; every GPU of an in-service instance runs
  one worker, which takes the oldest waiting request when idle.
- Every `eval_s` the policy reads the backlog (waiting requests, plus the
  running ones with `count_in_flight`) as CloudWatch saw it `metric_delay_s`
  ago. Target tracking wants
  ``ceil(backlog / (target x GPUs per instance))`` instances: it launches at
  once and scales in only after `scale_in_evals` evaluations in a row ask for
  fewer. With no instance the wake-from-zero alarm launches one.
- A launched instance takes jobs after `warmup_s` (boot, image pull, model
  load). A scaled-in instance takes no new job, finishes the running ones
  (the lifecycle hook) and is billed until then.
- Generation time per picture is uniform in [gen_min_s, gen_max_s] on the
  reference GPU, times the instance type's `speed` factor.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

HOUR = 3600.0
DOCS = Path(__file__).resolve().parents[1] / "docs"
BEGIN, END = "<!-- fleet_sim:begin -->", "<!-- fleet_sim:end -->"


@dataclass(frozen=True)
class InstanceType:
    """A GPU instance type: GPUs, hourly prices, and generation time relative to the reference."""

    name: str
    gpus: int
    on_demand: float
    spot: float
    speed: float = 1.0


# us-east-1 Linux list prices in USD per hour (Spot: a typical price); update before use.
INSTANCE_TYPES = (
    InstanceType("g5.xlarge", 1, 1.006, 0.45),
    InstanceType("g6.xlarge", 1, 0.805, 0.38, speed=1.1),
    InstanceType("g5.12xlarge", 4, 5.672, 2.30),
)


@dataclass(frozen=True)
class Policy:
    """The group's settings (template parameters) and CloudWatch's timing."""

    target: float = 10.0  # BacklogPerGpu
    min_size: int = 0
    max_size: int = 8
    warmup_s: float = 600.0  # InstanceWarmupSeconds
    eval_s: float = 60.0
    metric_delay_s: float = 120.0
    scale_in_evals: int = 15
    # Count running requests (invisible in SQS) in the backlog, as the template
    # does; without them an empty queue reads as no work and the fleet drops
    # to zero under a steady load its GPUs are keeping up with.
    count_in_flight: bool = True


@dataclass
class Instance:
    """One instance of the group."""

    launched: float
    ready: float
    gpus: int
    busy: int = 0
    terminating: bool = False
    ended: float | None = None


@dataclass
class Result:
    """What one run measured."""

    waits: list[float]
    instance_seconds: float
    gpus: int
    end: float
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # t, backlog, GPUs
    in_system_area: float = 0.0  # integral of requests waiting or running over time

    @property
    def pictures(self) -> int:
        """Requests served."""
        return len(self.waits)

    @property
    def gpu_hours(self) -> float:
        """Billed instance time times GPUs per instance."""
        return self.instance_seconds * self.gpus / HOUR

    def percentile(self, q: float) -> float:
        """The q-th percentile (0-100) of the waits, linearly interpolated."""
        ordered = sorted(self.waits) or [0.0]
        rank = (len(ordered) - 1) * q / 100
        low, high = math.floor(rank), math.ceil(rank)
        return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)

    def cost_per_1000(self, hourly: float) -> float:
        """USD per 1000 pictures at `hourly` per instance, idle time included."""
        return self.instance_seconds / HOUR * hourly / max(self.pictures, 1) * 1000


class _Run:
    """The state of one simulation: the event heap, the queue and the group."""

    def __init__(
        self,
        arrivals: Sequence[float],
        kind: InstanceType,
        policy: Policy,
        gen_seconds: Sequence[float],
    ) -> None:
        self.arrivals, self.kind, self.policy, self.gen = arrivals, kind, policy, gen_seconds
        self.events: list[tuple[float, int, str, int]] = []
        self.seq = 0
        self.instances: list[Instance] = []
        self.waiting: deque[int] = deque()
        self.waits = [0.0] * len(arrivals)
        # Per evaluation: the minute's average of the tracked metric (CloudWatch's
        # Average statistic) and the requests waiting at its end (the wake alarm's).
        self.history: list[tuple[float, float, int]] = []
        self.samples: list[tuple[float, int, int]] = []
        self.low_evals = self.done = self.in_system = 0
        self.area = self.waiting_area = self.last_t = 0.0
        self.marks = (0.0, 0.0)

    def push(self, t: float, what: str, ref: int = -1) -> None:
        heapq.heappush(self.events, (t, self.seq, what, ref))
        self.seq += 1

    def launch(self, t: float, ready_after: float) -> None:
        self.instances.append(Instance(launched=t, ready=t + ready_after, gpus=self.kind.gpus))
        self.push(t + ready_after, "ready", len(self.instances) - 1)

    def dispatch(self, t: float) -> None:
        for index, inst in enumerate(self.instances):
            while (
                self.waiting and not inst.terminating and inst.ready <= t and inst.busy < inst.gpus
            ):
                job = self.waiting.popleft()
                self.waits[job] = t - self.arrivals[job]
                inst.busy += 1
                self.push(t + self.gen[job] * self.kind.speed, "done", index)

    def finish(self, t: float, index: int) -> None:
        inst = self.instances[index]
        inst.busy -= 1
        self.done += 1
        self.in_system -= 1
        if inst.terminating and inst.busy == 0:
            inst.ended = t

    def evaluate(self, t: float) -> None:
        policy = self.policy
        tracked = self.area if policy.count_in_flight else self.waiting_area
        tracked -= self.marks[0] if policy.count_in_flight else self.marks[1]
        self.marks = (self.area, self.waiting_area)
        self.history.append((t, tracked / policy.eval_s, len(self.waiting)))
        seen = [h for h in self.history if h[0] <= t - policy.metric_delay_s]
        metric, backlog = (seen[-1][1], seen[-1][2]) if seen else (0.0, 0)
        active = [i for i in self.instances if not i.terminating]
        if not active:
            self.low_evals = 0
            if backlog >= 1:
                self.launch(t, policy.warmup_s)
        else:
            wanted = math.ceil(metric / (policy.target * self.kind.gpus))
            self.scale(t, active, max(policy.min_size, min(policy.max_size, wanted)))
        up = [i for i in self.instances if not i.terminating and i.ready <= t]
        self.samples.append((t, len(self.waiting), sum(i.gpus for i in up)))
        if self.done < len(self.arrivals) or any(i.ended is None for i in self.instances):
            self.push(t + policy.eval_s, "eval")

    def scale(self, t: float, active: list[Instance], wanted: int) -> None:
        if wanted >= len(active):
            self.low_evals = 0
            for _ in range(wanted - len(active)):
                self.launch(t, self.policy.warmup_s)
            return
        self.low_evals += 1
        if self.low_evals < self.policy.scale_in_evals:
            return
        self.low_evals = 0
        # Pending and idle instances go first, as they lose no work; a busy
        # one takes no new job and ends when its running jobs are done.
        for inst in sorted(active, key=lambda i: (i.ready <= t, i.busy))[: len(active) - wanted]:
            inst.terminating = True
            if inst.busy == 0:
                inst.ended = t

    def run(self) -> Result:
        while self.events:
            t, _, what, ref = heapq.heappop(self.events)
            self.area += self.in_system * (t - self.last_t)
            self.waiting_area += len(self.waiting) * (t - self.last_t)
            self.last_t = t
            if what == "arrive":
                self.waiting.append(ref)
                self.in_system += 1
            elif what == "done":
                self.finish(t, ref)
            elif what == "eval":
                self.evaluate(t)
            self.dispatch(t)
        end = max([i.ended or self.last_t for i in self.instances] + [self.last_t])
        billed = sum((end if i.ended is None else i.ended) - i.launched for i in self.instances)
        return Result(self.waits, billed, self.kind.gpus, end, self.samples, self.area)


def simulate(
    arrivals: Sequence[float],
    kind: InstanceType,
    policy: Policy,
    gen_seconds: Sequence[float],
    fixed_fleet: int | None = None,
) -> Result:
    """Run the policy (or `fixed_fleet` instances, ready at 0) over sorted `arrivals`."""
    run = _Run(arrivals, kind, policy, gen_seconds)
    if fixed_fleet is not None:
        for _ in range(fixed_fleet):
            run.launch(0.0, 0.0)
    else:
        for _ in range(policy.min_size):
            run.launch(0.0, policy.warmup_s)
        run.push(policy.eval_s, "eval")
    for job, t in enumerate(arrivals):
        run.push(t, "arrive", job)
    return run.run()


# ---------------------------------------------------------------------- traces


def constant(rate_per_h: float, hours: float) -> list[float]:
    """Evenly spaced arrivals."""
    gap = HOUR / rate_per_h
    return [i * gap for i in range(int(rate_per_h * hours))]


def steady(rate_per_h: float, hours: float, rng: random.Random) -> list[float]:
    """Poisson arrivals at a constant rate."""
    out, t = [], rng.expovariate(rate_per_h / HOUR)
    while t < hours * HOUR:
        out.append(t)
        t += rng.expovariate(rate_per_h / HOUR)
    return out


def daily(peak_per_h: float, rng: random.Random, days: float = 1.0) -> list[float]:
    """Poisson arrivals whose rate follows a day: zero at 04:00, `peak_per_h` at 16:00."""
    out = []
    for t in steady(peak_per_h, days * 24, rng):
        phase = 2 * math.pi * (t / HOUR - 4) / 24
        if rng.random() < (1 - math.cos(phase)) / 2:
            out.append(t)
    return out


def book(pictures: int = 300) -> list[float]:
    """A whole book's memories sent at once onto an idle, empty fleet."""
    return [0.0] * pictures


def generation_times(n: int, low: float, high: float, rng: random.Random) -> list[float]:
    """Seconds per picture on the reference GPU."""
    return [rng.uniform(low, high) for _ in range(n)]


# --------------------------------------------------------------------- reports


def run_all(
    policy: Policy, gen_min: float, gen_max: float, seed: int = 7
) -> tuple[list[dict[str, object]], dict[str, Result]]:
    """Every trace on every instance type: rows for the table, and runs for the plot."""
    rng = random.Random(seed)
    traces = {
        "steady 300/h, 8 h": steady(300, 8, rng),
        "daily, peak 400/h": daily(400, rng),
        "book of 300 at once": book(300),
    }
    rows: list[dict[str, object]] = []
    plotted: dict[str, Result] = {}
    for trace, arrivals in traces.items():
        gen = generation_times(len(arrivals), gen_min, gen_max, random.Random(seed))
        for kind in INSTANCE_TYPES:
            result = simulate(arrivals, kind, policy, gen)
            if kind is INSTANCE_TYPES[0]:
                plotted[trace] = result
            rows.append(
                {
                    "trace": trace,
                    "type": kind.name,
                    "pictures": result.pictures,
                    "p50": result.percentile(50),
                    "p95": result.percentile(95),
                    "gpu_hours": result.gpu_hours,
                    "on_demand": result.cost_per_1000(kind.on_demand),
                    "spot": result.cost_per_1000(kind.spot),
                }
            )
    return rows, plotted


def table(rows: list[dict[str, object]]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| trace | instance | pictures | wait p50 | wait p95 | GPU-hours"
        " | USD / 1000, On-Demand | USD / 1000, Spot |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['trace']} | {r['type']} | {r['pictures']} | {r['p50']:.0f} s | {r['p95']:.0f} s"
        f" | {r['gpu_hours']:.1f} | {r['on_demand']:.2f} | {r['spot']:.2f} |"
        for r in rows
    ]
    return "\n".join(lines)


def plot(plotted: dict[str, Result], path: Path) -> Path:
    """Backlog and GPUs in service over time, one panel per trace."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server or in CI
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(plotted), figsize=(13, 3.8), dpi=110)
    for ax, (trace, result) in zip(axes, plotted.items(), strict=True):
        ts = [s[0] / HOUR for s in result.samples]
        ax.plot(ts, [s[1] for s in result.samples], label="waiting requests")
        twin = ax.twinx()
        twin.step(ts, [s[2] for s in result.samples], color="tab:orange", where="post")
        twin.set_ylabel("GPUs in service", color="tab:orange")
        ax.set_title(f"{trace} (p95 wait {result.percentile(95) / 60:.1f} min)", fontsize=9)
        ax.set_xlabel("hours")
        ax.set_ylabel("waiting requests", color="tab:blue")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run, print, optionally write the figure and the docs section."""
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_sim", description=__doc__)
    parser.add_argument("--gen-min", type=float, default=15.0, help="s per picture (15)")
    parser.add_argument("--gen-max", type=float, default=30.0, help="s per picture (30)")
    parser.add_argument("--target", type=float, default=10.0, help="BacklogPerGpu (10)")
    parser.add_argument("--warmup", type=float, default=600.0, help="s to first job (600)")
    parser.add_argument("--max-size", type=int, default=8, help="MaxSize (8)")
    parser.add_argument("--visible-only", action="store_true", help="track waiting requests only")
    parser.add_argument("--docs", action="store_true", help="write docs/fleet_sim.png, the table")
    args = parser.parse_args(argv)
    policy = Policy(args.target, max_size=args.max_size, warmup_s=args.warmup)
    policy = replace(policy, count_in_flight=not args.visible_only)
    rows, plotted = run_all(policy, args.gen_min, args.gen_max)
    text = (
        f"Generation {args.gen_min:g}-{args.gen_max:g} s per picture, BacklogPerGpu"
        f" {args.target:g}, warm-up {args.warmup:g} s, MaxSize {args.max_size}, metrics"
        f" {policy.metric_delay_s:g} s late, scale-in after {policy.scale_in_evals} low"
        " minutes; costs include the idle tail before scale-in.\n\n" + table(rows)
    )
    print(text)
    if args.docs:
        plot(plotted, DOCS / "fleet_sim.png")
        write_docs(text, DOCS / "operations.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
