"""Prometheus metrics, on a registry of the worker's own, and CloudWatch records.

A registry per :class:`Metrics` (not the process-global one) keeps tests
isolated and lets one process host several workers. For CloudWatch, each
finished job also writes one Embedded Metric Format record to the JSON log
stream (:func:`emf_record`), which the container's log driver already ships:
no agent and no extra API call.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

PREFIX = "illustrator"
# Stage durations run from milliseconds (a HEAD) to minutes (SDXL at 150 steps).
STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """The service's metrics.

    Attributes:
        jobs: finished jobs by ``kind``, ``status`` (succeeded, reused,
            failed, cancelled) and ``error_code`` (empty on success).
        retries: requests sent back to the queue after a transient failure
            (or after failing to report a permanent one), by error code.
        dead_lettered: requests copied to the dead-letter queue, by error code.
        stage_seconds: time spent per stage, as in the events' ``timings_ms``
            (queue_wait, download, generate, upload, total).
        in_flight: requests received and not yet deleted or released.
        model_load_seconds: how long loading the generator took.
        last_poll: Unix time of the last successful receive call.
        loop_errors: failed receive-loop calls (the worker's own AWS trouble).
        started_events: started events published (``PUBLISH_STARTED_EVENTS``).
        safety_pictures: pictures the safety checker looked at, by ``result``
            (``passed`` or ``flagged``), redraws included: the flagged rate
            is flagged over both.
        safety_redraws: pictures drawn again because they were flagged.
        style_reloads: style catalog reloads (``SIGHUP``), by ``outcome``:
            ``applied``, or ``refused`` (the old catalog stays).
        graphs_built: graphs compiled or recorded during jobs (torch.compile);
            0 when the warm-up foresaw every request, as it should.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.jobs = Counter(
            f"{PREFIX}_jobs", "Finished jobs.", ["kind", "status", "error_code"], registry=r
        )
        self.retries = Counter(
            f"{PREFIX}_retries",
            "Transient failures returned to the queue.",
            ["error_code"],
            registry=r,
        )
        self.dead_lettered = Counter(
            f"{PREFIX}_dead_lettered",
            "Requests sent to the dead-letter queue.",
            ["error_code"],
            registry=r,
        )
        self.stage_seconds = Histogram(
            f"{PREFIX}_stage_duration_seconds",
            "Duration of each job stage.",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            f"{PREFIX}_jobs_in_flight", "Requests received and not yet finished.", registry=r
        )
        self.model_load_seconds = Gauge(
            f"{PREFIX}_model_load_seconds", "Time taken to load the generator.", registry=r
        )
        self.last_poll = Gauge(
            f"{PREFIX}_last_poll_timestamp_seconds",
            "Unix time of the last receive call.",
            registry=r,
        )
        self.loop_errors = Counter(
            f"{PREFIX}_loop_errors", "Failed receive-loop AWS calls.", registry=r
        )
        self.started_events = Counter(
            f"{PREFIX}_started_events", "Started events published.", registry=r
        )
        self.safety_pictures = Counter(
            f"{PREFIX}_safety_checked_pictures",
            "Pictures checked by the safety checker, by result (passed, flagged).",
            ["result"],
            registry=r,
        )
        self.safety_redraws = Counter(
            f"{PREFIX}_safety_redraws", "Pictures drawn again after being flagged.", registry=r
        )
        self.style_reloads = Counter(
            f"{PREFIX}_style_catalog_reloads",
            "Style catalog reloads, by outcome (applied, refused).",
            ["outcome"],
            registry=r,
        )
        self.graphs_built = Counter(
            f"{PREFIX}_graphs_built",
            "Graphs compiled or recorded by torch.compile during jobs (0 after a good warm-up).",
            registry=r,
        )

    def job_finished(self, kind: str | None, status: str, error_code: str = "") -> None:
        """Count one finished job."""
        self.jobs.labels(kind=kind or "unknown", status=status, error_code=error_code).inc()

    def safety_checked(self, checked: int, flagged: int, redraws: int) -> None:
        """Count one job's safety checks."""
        self.safety_pictures.labels(result="passed").inc(checked - flagged)
        self.safety_pictures.labels(result="flagged").inc(flagged)
        self.safety_redraws.inc(redraws)

    def observe(self, timings_ms: dict[str, int]) -> None:
        """Record a job's stage timings."""
        for stage, ms in timings_ms.items():
            self.stage_seconds.labels(stage=stage).observe(ms / 1000)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


# The events' stages that become CloudWatch metrics, by metric name.
EMF_STAGES = {
    "QueueWaitSeconds": "queue_wait",
    "GenerateSeconds": "generate",
    "TotalSeconds": "total",
}


# What the safety checker did, by metric name (counts of pictures).
EMF_SAFETY = {
    "PicturesChecked": "checked",
    "PicturesFlagged": "flagged",
    "PicturesRedrawn": "redraws",
}


def emf_record(
    namespace: str,
    kind: str | None,
    status: str,
    timings_ms: dict[str, int],
    timestamp_ms: int,
    safety: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One finished job as a CloudWatch Embedded Metric Format record.

    ``Jobs`` (a count) by ``Kind`` and ``Status`` and by ``Status`` alone,
    for the failure rate; the stage durations in seconds by ``Kind`` and for
    the whole fleet. A stage the job did not reach is left out. With
    `safety` (a job the safety checker saw), ``PicturesChecked``,
    ``PicturesFlagged`` and ``PicturesRedrawn`` by ``Kind`` and for the fleet.
    """
    durations = {
        name: timings_ms[stage] / 1000 for name, stage in EMF_STAGES.items() if stage in timings_ms
    }
    counts = {name: safety[key] for name, key in EMF_SAFETY.items()} if safety else {}
    directives = [_directive(namespace, [["Kind", "Status"], ["Status"]], ["Jobs"], "Count")]
    for metrics, unit in ((durations, "Seconds"), (counts, "Count")):
        if metrics:
            directives.append(_directive(namespace, [["Kind"], []], list(metrics), unit))
    return {
        "_aws": {"Timestamp": timestamp_ms, "CloudWatchMetrics": directives},
        "Kind": kind or "unknown",
        "Status": status,
        "Jobs": 1,
        **durations,
        **counts,
    }


def _directive(
    namespace: str, dimensions: list[list[str]], names: list[str], unit: str
) -> dict[str, Any]:
    """One EMF metric directive: `names` in `unit`, by each set of `dimensions`."""
    return {
        "Namespace": namespace,
        "Dimensions": dimensions,
        "Metrics": [{"Name": name, "Unit": unit} for name in names],
    }
