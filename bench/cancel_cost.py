"""What looking for cancellation markers costs the GPU: busy with the checks on against off.

The same batch of `builtin:blank` jobs (``BLANK_LATENCY_MS`` each) goes through
one consumer process with the marker checks off (patched out: no S3 request
at all), on at the default ``CANCEL_POLL_S`` of 2 s, and on at a poll of
0.05 s (many HEADs per job, to show the checks stay off the GPU's path).
No marker exists, so every job is drawn; the figure is the GPU-busy fraction
(jobs x simulated time over the wall time from the first request sent to the
last event), and each "on" run over the "off" run, measured in the same run.

    python -m bench.cancel_cost [--jobs 60] [--latency-ms 200]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.endpoint import fresh_stack, start_moto, with_fresh_queue
from bench.measure import timed_batch
from bench.procs import Children, isolated_harness
from bench.queue_path import batch_timeout_s
from bench.systems import start_consumer, wait_ready
from bench.workload import EventCollector, job_ids, upload_avatar

# A consumer whose marker checks never ask S3: the "off" side.
CHECKS_OFF = """
import sys
from consumer.delivery.cancellation import CancelWatch
async def never(self, user_id, job_id):
    return False
CancelWatch.cancelled = never
from consumer.cli.main import main
sys.exit(main(["run"]))
"""

SIDE = 256
AVATAR_SIDE = 128


def _modes() -> list[tuple[str, dict[str, str], list[str] | None]]:
    return [
        ("off", {}, [sys.executable, "-c", CHECKS_OFF]),
        ("on, poll 2 s", {"CANCEL_POLL_S": "2"}, None),
        ("on, poll 0.05 s", {"CANCEL_POLL_S": "0.05"}, None),
    ]


def run(jobs: int, latency_ms: int, work: Path) -> list[dict[str, Any]]:
    """Each mode in turn on a queue of its own; its GPU-busy fraction."""
    results: list[dict[str, Any]] = []
    with Children(work) as children:
        _, url = start_moto(children)
        stack = fresh_stack(url)
        upload_avatar(stack, AVATAR_SIDE)
        for index, (mode, env, argv) in enumerate(_modes()):
            queue = with_fresh_queue(stack)
            child = start_consumer(
                children, queue, latency_ms, index, extra_env=env, argv=argv, name="cancel"
            )
            wait_ready(child)
            ids = job_ids(f"cancel-{index}", jobs)
            with EventCollector(queue) as collector:
                batch = timed_batch(queue, collector, ids, SIDE, batch_timeout_s(jobs, latency_ms))
            children.stop(child)
            busy = jobs * latency_ms / 1000 / batch.wall_s
            results.append(
                {
                    "mode": mode,
                    "wall_s": round(batch.wall_s, 3),
                    "busy": round(busy, 4),
                    "succeeded": batch.count("succeeded"),
                }
            )
            print(f"  {mode:<16} wall {batch.wall_s:6.2f} s  GPU busy {busy:.3f}", flush=True)
    off = results[0]["busy"]
    for result in results[1:]:
        result["over_off"] = round(result["busy"] / off, 3)
        print(f"  {result['mode']} / off = {result['over_off']:.3f}", flush=True)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=60)
    parser.add_argument("--latency-ms", type=int, default=200)
    args = parser.parse_args(argv)
    print(f"cancellation checks, {args.jobs} jobs of {args.latency_ms} ms:", flush=True)
    with isolated_harness(), tempfile.TemporaryDirectory(prefix="bench-cancel-") as work:
        results = run(args.jobs, args.latency_ms, Path(work))
    bad = [r["mode"] for r in results if r["succeeded"] != args.jobs]
    if bad:
        print(f"  not every job succeeded: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
