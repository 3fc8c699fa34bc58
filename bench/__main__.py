"""`python -m bench`: every benchmark in turn, then the results, plots and docs.

The phases run one after the other (the development machine has two cores,
shared by moto's server, the consumers and the harness). A failed phase is
recorded and the others still run; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import signal
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from bench import machine, plots, queue_path, report, scale_out, tiny_cpu
from bench.endpoint import start_moto
from bench.procs import REPO_ROOT, Child, Children, isolated_harness

PHASES = ("queue", "scale", "tiny")
RESULT_FILES = {"queue_path": "queue", "scale_out": "scale", "tiny_cpu": "tiny", "run": None}


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; defaults are the full benchmark of issue 6."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    add = parser.add_argument
    add("--phases", default=",".join(PHASES), help="comma-separated subset of queue,scale,tiny")
    add("--jobs", type=int, default=200, help="jobs per queue-path run")
    add("--lengths", type=_ints, default=(50, 500), help="simulated GPU ms per job, e.g. 50,500")
    add("--lone-jobs", type=int, default=20, help="jobs sent one at a time after each batch")
    add("--side", type=int, default=1024, help="output width and height")
    add("--avatar", type=int, default=512, help="avatar width and height")
    add("--consumers", type=_ints, default=(1, 2, 4), help="consumer counts for scale-out")
    add("--scale-jobs", type=int, default=200, help="jobs per scale-out run")
    add("--scale-length", type=int, default=50, help="simulated GPU ms per scale-out job")
    add("--tiny-repeats", type=int, default=7, help="timed builtin:tiny runs per step count")
    add("--results", type=Path, default=REPO_ROOT / "bench" / "results")
    add("--docs", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    unknown = set(args.phases.split(",")) - set(PHASES)
    if unknown:
        parser.error(f"unknown phase(s) {', '.join(sorted(unknown))}; choose from {PHASES}")
    return args


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """Turn SIGTERM into SystemExit so every child is stopped on the way out."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_phase(
    name: str,
    action: Callable[[], dict[str, Any]],
    children: Children,
    keep: Child | None,
    errors: dict[str, str],
) -> dict[str, Any] | None:
    """Run one phase; on failure record why and stop what it left running."""
    print(f"{name}:", flush=True)
    try:
        return action()
    except Exception as error:
        errors[name] = f"{type(error).__name__}: {error}"
        print(f"  FAILED: {errors[name]}", flush=True)
        traceback.print_exc()
        children.stop_many([c for c in reversed(children.started) if c is not keep])
        return None


def run_phases(args: argparse.Namespace, work: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Every requested phase; their results by name and the errors by phase."""
    phases = set(args.phases.split(","))
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    queue_config = queue_path.QueueConfig(
        args.jobs, args.lengths, args.lone_jobs, args.side, args.avatar
    )
    scale_config = scale_out.ScaleConfig(
        args.consumers, args.scale_jobs, args.scale_length, args.side, args.avatar
    )
    with Children(work) as children:
        moto: Child | None = None
        url = ""
        if phases & {"queue", "scale"}:
            moto, url = start_moto(children)

        def on_moto(
            run: Callable[[Children, Child, str, Any], dict[str, Any]], config: Any
        ) -> Callable[[], dict[str, Any]]:
            def action() -> dict[str, Any]:
                if moto is None:
                    raise RuntimeError("moto's server is not running")
                return run(children, moto, url, config)

            return action

        steps: list[tuple[str, str, Callable[[], dict[str, Any]]]] = [
            ("queue", "queue_path", on_moto(queue_path.run, queue_config)),
            ("scale", "scale_out", on_moto(scale_out.run, scale_config)),
            ("tiny", "tiny_cpu", lambda: tiny_cpu.run(children, args.tiny_repeats)),
        ]
        for phase, key, action in steps:
            if phase in phases:
                outcome = _run_phase(key, action, children, moto, errors)
                if outcome is not None:
                    results[key] = outcome
    return results, errors


def write_json(directory: Path, name: str, data: dict[str, Any]) -> Path:
    """Write ``<name>.json`` atomically (a reader never sees half a file)."""
    path = directory / f"{name}.json"
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    scratch.replace(path)
    return path


def load_results(directory: Path) -> dict[str, Any]:
    """Every result file present, so a partial run still renders the whole page."""
    found = {}
    for name in RESULT_FILES:
        path = directory / f"{name}.json"
        if path.exists():
            found[name] = json.loads(path.read_text(encoding="utf-8"))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Run, write, draw, document; 0 when every phase succeeded."""
    args = parse_args(argv)
    started = time.monotonic()
    about = machine.describe()
    args.results.mkdir(parents=True, exist_ok=True)
    with (
        _sigterm_exits(),
        isolated_harness(),
        tempfile.TemporaryDirectory(prefix="illustrator-bench-") as work,
    ):
        results, errors = run_phases(args, Path(work))
    for name, data in results.items():
        write_json(args.results, name, data)
    finished = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    run = {
        "machine": about,
        "duration_s": round(time.monotonic() - started, 1),
        "finished_at": finished,
        "phases": args.phases,
        "errors": errors,
    }
    write_json(args.results, "run", run)
    everything = load_results(args.results)
    for path in plots.draw(everything, args.results):
        print(f"wrote {path}")
    report.refresh(args.docs, report.render(everything))
    print(f"refreshed {args.docs}; {run['duration_s']:.0f} s in all", flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
