"""Simulation of the worker groups' scaling policy, run as AWS runs it.

`python -m bench.fleet_sim` runs the policy of infra/illustrator.yaml, and
today's for comparison, against three traces (a steady load, a day, a whole
book at once) at 15-30 s per picture (g5.xlarge) and 2-3 s per picture
(H100-class), prints the waits, the GPU count's spread, the cost per 1000
pictures on On-Demand and on Spot, and the book's time to done, checks the
goals, and with ``--docs`` writes the table into docs/operations.md and
docs/benchmarks.md and draws docs/fleet_sim.png.

The modules: bench/fleet_policy.py (the policy and AWS's documented timing
rules), bench/fleet_scaling.py (the policies of one group, each minute),
bench/fleet_model.py (the event loop, instances, warm pools, costs),
bench/fleet_traces.py (arrivals), bench/fleet_report.py (cases, table, plot).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from bench.fleet_model import HOUR, VOLUME_HOURLY, Group, InstanceType, Result, Simulation
from bench.fleet_policy import BEFORE, TEMPLATE, Policy
from bench.fleet_report import (
    BEGIN,
    END,
    INSTANCE_TYPES,
    goals,
    goals_text,
    plot,
    run_all,
    table,
    write_docs,
)
from bench.fleet_traces import book, constant, daily, generation_times, steady

DOCS = Path(__file__).resolve().parents[1] / "docs"

__all__ = [
    "BEFORE",
    "BEGIN",
    "END",
    "HOUR",
    "INSTANCE_TYPES",
    "VOLUME_HOURLY",
    "Group",
    "InstanceType",
    "Policy",
    "Result",
    "Simulation",
    "book",
    "constant",
    "daily",
    "generation_times",
    "main",
    "run",
    "steady",
]


def run(
    arrivals: Sequence[float],
    gen: Sequence[float],
    groups: Sequence[Group],
    policy: Policy = TEMPLATE,
) -> Result:
    """Simulate `groups` under `policy` over sorted `arrivals`."""
    return Simulation(arrivals, gen, groups, policy).run()


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run, print, optionally write the figure and the docs sections."""
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_sim", description=__doc__)
    default = Policy()
    parser.add_argument(
        "--target-wait",
        type=float,
        default=default.target_wait_s,
        help="TargetWaitSeconds (%(default)s)",
    )
    parser.add_argument(
        "--warm-start",
        type=float,
        default=default.warm_start_s,
        help="s from a stopped warm instance to a healthy worker (%(default)s)",
    )
    parser.add_argument(
        "--cold-start",
        type=float,
        default=default.cold_start_s,
        help="s from launch to a healthy worker (%(default)s)",
    )
    parser.add_argument("--warm-max", type=int, default=16, help="warm group MaxSize (16)")
    parser.add_argument("--docs", action="store_true", help="write the docs sections and the plot")
    args = parser.parse_args(argv)
    policy = Policy(
        target_wait_s=args.target_wait, warm_start_s=args.warm_start, cold_start_s=args.cold_start
    )
    rows, runs = run_all(policy, args.warm_max)
    text = (
        f"TargetWaitSeconds {policy.target:g}, warm start {policy.warm_start_s:g} s, cold start"
        f" {policy.cold_start_s:g} s, metrics {policy.metric_delay_s:g} s late; today's policy"
        " (BacklogPerGpu 10, MaxSize 8) for comparison. Costs include idle tails and every"
        " volume (warm pools too); a warm-pool group is On-Demand in both columns.\n\n"
        + table(rows)
        + "\n\nGoals at 15-30 s per picture:\n\n"
        + goals_text(rows)
    )
    print(text)
    if args.docs:
        plot(runs, DOCS / "fleet_sim.png")
        for page in ("operations.md", "benchmarks.md"):
            write_docs(text, DOCS / page)
    return 0 if all(met for _, met, _ in goals(rows)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
