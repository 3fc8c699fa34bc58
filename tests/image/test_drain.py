"""A deployed worker stopped mid-job (``docker stop``: SIGTERM, then SIGKILL
after the container's stop timeout) drains and exits 0 by itself, so
``--restart always`` and the watchdog see a clean stop, never a kill.

A job that fits the drain finishes and the stop takes less than
DRAIN_TIMEOUT_S; one that does not is released to the queue when the drain
times out, and the worker still exits 0 before the stop timeout.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from consumer.cli import samples
from tests.image.test_deployed import collect
from tests.support.aws import make_stack
from tests.support.instance import Instance, worker_environment

# The stop timeout exceeds the drain, as the template sets it: only a worker
# that overran its drain and its own stop would be killed.
STOP_MARGIN_S = 60


def _records(logs: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in logs.splitlines() if line[:1] == "{"]


@pytest.mark.parametrize(
    ("drain_s", "job", "outcome"),
    [
        # Seconds of CPU work (a minute on a crowded machine): generating when
        # the stop comes, done well within the drain.
        (120, {"num_inference_steps": 16, "width": 128, "height": 128}, "succeeded"),
        # Minutes of work: the drain times out and gives the request back.
        (10, {"num_inference_steps": 150, "width": 512, "height": 512}, "released"),
    ],
)
def test_sigterm_drains_and_exits_zero(
    fresh_instance: Instance, moto_endpoint: str, drain_s: int, job: dict[str, Any], outcome: str
) -> None:
    stack = make_stack(moto_endpoint, visibility_timeout=120)
    stack.put("avatars/u1.png", samples.avatar())
    settings = {
        **stack.environment(),
        **worker_environment(),
        "DRAIN_TIMEOUT_S": str(drain_s),
        "PUBLISH_STARTED_EVENTS": "true",
    }
    started = fresh_instance.start(settings, stop_timeout=drain_s + STOP_MARGIN_S)
    worker = fresh_instance.worker()
    assert started.returncode == 0, started.stderr + worker.logs()
    stack.send({"job_id": "d1", "kind": "memory", "user_id": "u1", "prompt": "a walk", **job})
    (running,) = collect(stack, 1, within=120)
    assert (running["job_id"], running["status"]) == ("d1", "started")

    seconds = worker.stop(timeout=drain_s + STOP_MARGIN_S + 30)

    state = worker.state()
    logs = worker.logs()
    assert (state["Running"], state["ExitCode"], state["OOMKilled"]) == (False, 0, False), logs
    records = _records(logs)
    events = [r.get("event", "") for r in records]
    assert events.index("drain_requested") < events.index("drain_finished"), logs
    after = collect(stack, 1, within=5)
    if outcome == "succeeded":
        assert seconds < drain_s, logs[-3000:]
        # The job was still running when the signal came.
        assert events.index("drain_requested") < events.index("job_succeeded")
        assert [(e["job_id"], e["status"]) for e in after] == [("d1", "succeeded")]
        assert stack.queue_counts() == (0, 0)
    else:
        assert seconds < drain_s + STOP_MARGIN_S, logs[-3000:]
        assert "drain_timeout" in events
        assert "release_failed" not in events
        (finished,) = [r for r in records if r.get("event") == "drain_finished"]
        assert finished["released_running"] == 1
        assert after == []
        # Given back, not deleted: visible again, unless the worker's
        # cancelled long poll, which moto keeps open, took it once more (it
        # then returns after the visibility timeout).
        assert sum(stack.queue_counts()) == 1
