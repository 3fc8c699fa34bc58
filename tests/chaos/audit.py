"""The chaos soak's audit: what each planned job must reach, and the figures.

The soak (:mod:`tests.chaos.soak`) plans the jobs and runs them; this module
reads what the bucket, the completion events, the dead-letter queue and the
consumers' logs hold afterwards, and says whether every job ended as it must.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.process import ConsumerProcess

# MAX_WORKER_DEATHS's default, which the consumers keep.
MAX_WORKER_DEATHS = 2
DEATHS = re.compile(r"in flight when (\d+) workers? died")


@dataclass(frozen=True)
class PlannedJob:
    """One job and the outcome it must reach."""

    job_id: str
    user_id: str
    kind: str
    body: str
    expect: str  # "succeeded" or an error code

    @property
    def key(self) -> str:
        return f"generated/{self.user_id}/{self.kind}_{self.job_id}.png"


@dataclass
class Report:
    """The audit's figures."""

    jobs: int = 0
    messages: int = 0
    consumers: int = 0
    kills: int = 0
    outages: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)
    final_exits: list[int] = field(default_factory=list)
    succeeded: int = 0
    reused_events: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    inconsistent: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    poison_deaths: dict[str, int] = field(default_factory=dict)
    poison_broken: dict[str, int] = field(default_factory=dict)
    poison_problems: list[str] = field(default_factory=list)
    poison_charged: list[int] = field(default_factory=list)
    vanished_crashes: list[str] = field(default_factory=list)
    duplicate_objects: int = 0
    stray_objects: list[str] = field(default_factory=list)
    extra_success_events: int = 0
    extra_failure_events: int = 0
    extra_dead_letters: int = 0
    calls: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        """Whether the audit passes."""
        return not (
            self.lost
            or self.inconsistent
            or self.unexpected
            or self.duplicate_objects
            or self.stray_objects
            or self.crashes
            or self.poison_problems
            or self.timed_out
            or any(code != 0 for code in self.final_exits)
        )

    def lines(self) -> list[str]:
        """The figures, for people."""
        faults = ", ".join(f"{k}={v}" for k, v in sorted(self.faults.items()))
        return [
            f"jobs {self.jobs} (messages sent {self.messages}), consumers {self.consumers}, "
            f"{self.elapsed_s:.1f} s ({self.jobs / max(self.elapsed_s, 1e-9):.1f} jobs/s)",
            f"kills (SIGKILL) {self.kills}, unexpected exits {len(self.crashes)}, "
            f"final exit statuses {self.final_exits}",
            f"whole-service outages: {', '.join(self.outages) or 'none'}",
            f"faults injected {sum(self.faults.values())} of {self.calls} calls: {faults}",
            f"succeeded {self.succeeded} (reused events {self.reused_events}), "
            f"failed {sum(self.failed.values())} {dict(sorted(self.failed.items()))}",
            f"lost {len(self.lost)}, duplicate objects {self.duplicate_objects}, "
            f"stray objects {len(self.stray_objects)}, inconsistent {len(self.inconsistent)}, "
            f"unexpected outcomes {len(self.unexpected)}",
            f"poison jobs {len(self.poison_deaths)}: deaths each was charged "
            f"{sorted(self.poison_charged)}, workers each broke "
            f"{sorted(self.poison_broken.values())} (of which exited 1: "
            f"{sorted(self.poison_deaths.values())}), "
            f"problems {len(self.poison_problems)}; other jobs crashed_worker by the "
            f"soak's kills alone {len(self.vanished_crashes)}",
            f"at-least-once extras: success events +{self.extra_success_events}, "
            f"failure events +{self.extra_failure_events}, "
            f"dead letters +{self.extra_dead_letters}",
            "phases (s): " + ", ".join(f"{k} {v:.1f}" for k, v in self.phases.items()),
            f"verdict: {'PASS' if self.ok else 'FAIL'}"
            + (" (timed out)" if self.timed_out else ""),
        ]


def audit(
    report: Report,
    jobs: Sequence[PlannedJob],
    events: Sequence[dict[str, Any]],
    dead: Sequence[dict[str, Any]],
    keys: Sequence[str],
    vanished: frozenset[str] = frozenset(),
) -> None:
    """Fill `report` from what the bucket, the topic and the DLQ hold.

    `vanished`: the jobs whose workers were seen to vanish with them, their
    deaths recorded from the receive count (the workers' logs say so), which
    broke no worker themselves: with a SIGKILL every few seconds such a job
    may, as the contract says, end ``crashed_worker``; it is counted apart.
    """
    by_job: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        by_job[str(event.get("job_id"))].append(event)
    dead_codes: dict[str, list[str]] = defaultdict(list)
    for message in dead:
        job_id = str(json.loads(message["Body"]).get("job_id"))
        dead_codes[job_id].append(message["MessageAttributes"]["error_code"]["StringValue"])
    key_count = Counter(keys)
    expected_keys = {job.key for job in jobs}
    report.stray_objects = sorted(set(keys) - expected_keys)
    report.duplicate_objects = sum(n - 1 for n in key_count.values() if n > 1)
    for job in jobs:
        mine = by_job.get(job.job_id, [])
        wins = [e for e in mine if e["status"] == "succeeded"]
        losses = [e["error"]["code"] for e in mine if e["status"] == "failed"]
        letters = dead_codes.get(job.job_id, [])
        objects = key_count.get(job.key, 0)
        report.reused_events += sum(1 for e in wins if e.get("reused"))
        if not wins and not losses:
            report.lost.append(job.job_id)
            continue
        if wins and objects == 1 and not losses and not letters:
            report.succeeded += 1
            report.extra_success_events += len(wins) - 1
            outcome = "succeeded"
        elif losses and letters and not wins and objects == 0 and set(losses) == set(letters):
            report.failed[losses[0]] += 1
            report.extra_failure_events += len(losses) - 1
            report.extra_dead_letters += len(letters) - 1
            outcome = losses[0]
        else:
            report.inconsistent.append(
                f"{job.job_id}: {len(wins)} success, failures {losses}, "
                f"dead letters {letters}, {objects} object(s)"
            )
            continue
        if outcome == "crashed_worker" != job.expect and job.job_id in vanished:
            report.vanished_crashes.append(job.job_id)
        elif outcome != job.expect:
            report.unexpected.append(f"{job.job_id}: expected {job.expect}, got {outcome}")


def died_of_poison(consumer: ConsumerProcess) -> str:
    """The logs of `consumer`'s incarnations that exited 1 (not killed by the soak)."""
    paths = [
        consumer.workdir / f"{consumer.name}.{n}.log" for n, code in consumer.exits if code == 1
    ]
    return "".join(path.read_text(errors="replace") for path in paths)


def _records(log: str, event: str) -> Iterator[dict[str, Any]]:
    for line in log.splitlines():
        if f'"{event}"' not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill
        if record.get("event") == event:
            yield record


def fatal_jobs(log: str) -> list[str]:
    """The job of each fatal failure in a consumer's JSON log, in order."""
    return [str(r.get("job_id")) for r in _records(log, "job_failed") if r["severity"] == "fatal"]


def silent_deaths_of(log: str) -> set[str]:
    """The jobs a worker recorded silent deaths of (its receive count), or
    failed as ``crashed_worker`` for them."""
    recorded = {
        str(r.get("job_id"))
        for r in _records(log, "job_released")
        if "without a word" in str(r.get("reason"))
    }
    return recorded | {
        str(r.get("job_id"))
        for r in _records(log, "job_failed")
        if "workers vanished with it" in str(r.get("error"))
    }


def audit_poison(
    report: Report,
    jobs: Sequence[PlannedJob],
    events: Sequence[dict[str, Any]],
    taken_down: Counter[str],
) -> None:
    """Each poison job's failed events name ``MAX_WORKER_DEATHS`` deaths.

    `taken_down`: the workers that exited 1 after a fatal failure of each job
    (a figure: the soak's own kills and duplicates make it vary).
    """
    for job in jobs:
        if job.expect != "crashed_worker":
            continue
        report.poison_deaths[job.job_id] = taken_down[job.job_id]
        named = {
            int(found.group(1))
            for e in events
            if e.get("job_id") == job.job_id and e["status"] == "failed"
            if (found := DEATHS.search(e["error"]["message"]))
        }
        report.poison_charged += sorted(named)
        if named != {MAX_WORKER_DEATHS}:
            report.poison_problems.append(
                f"{job.job_id}: took down {taken_down[job.job_id]} workers, "
                f"its events name {sorted(named)} deaths"
            )
