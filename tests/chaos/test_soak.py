"""The short chaos soak (`make test-outages`): a few dozen jobs, kills and faults.

`make soak` runs the long one (1000 jobs, three consumers); this one keeps
the same audit on a scale a 2-core CI runner finishes in about a minute.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.chaos.soak import SoakConfig, run_soak

# Minutes of real time: `make test-outages`, after `make test`.
pytestmark = pytest.mark.outages

SHORT = SoakConfig(
    jobs=60,
    consumers=2,
    duration_s=150.0,
    kill_every_s=3.0,
    fault_rate=0.04,
    visibility_s=3,
    # Slow enough "GPU" that the kills land while jobs are in flight.
    latency_ms=120,
    seed=7,
    # Each takes down two workers: four restarts in the run.
    poison=2,
    # Each service out whole for a few seconds, within the run's minute.
    outage_s=4.0,
)


def test_short_chaos_soak_loses_nothing_and_duplicates_nothing(
    moto_endpoint: str, tmp_path: Path
) -> None:
    config = dataclasses.replace(SHORT, workdir=tmp_path)
    report = run_soak(config, moto_endpoint)
    summary = "\n".join(report.lines())
    print(summary)
    assert report.ok, summary
    assert report.kills >= 1, summary
    assert sum(report.faults.values()) > 0, summary
    assert report.succeeded + sum(report.failed.values()) == config.jobs
    assert report.failed, "the mix includes requests that must fail"
    # Each poison job was dead-lettered as crashed_worker after two deaths
    # (the audit checks its events and letter), having broken a worker at least.
    assert len(report.poison_deaths) == SHORT.poison
    assert all(broke >= 1 for broke in report.poison_broken.values()), summary
    assert report.failed["crashed_worker"] == SHORT.poison + len(report.vanished_crashes)
    # A blameless request is charged only deaths its receive count proves;
    # even a SIGKILL every 3 s gives few enough of them for that to be rare.
    assert len(report.vanished_crashes) <= config.jobs // 20, summary
