"""CloudWatch Embedded Metric Format records of finished jobs."""

from __future__ import annotations

import json
from typing import Any

from consumer.metrics import emf_record


def _check_emf(record: dict[str, Any]) -> None:
    """What CloudWatch requires of an EMF record, as its specification states."""
    meta = record["_aws"]
    assert isinstance(meta["Timestamp"], int)
    for directive in meta["CloudWatchMetrics"]:
        assert directive["Namespace"]
        for dimension_set in directive["Dimensions"]:
            for name in dimension_set:
                assert isinstance(record[name], str), name
        for metric in directive["Metrics"]:
            assert isinstance(record[metric["Name"]], int | float), metric
            assert metric["Unit"] in {"Count", "Seconds"}


def test_a_finished_job_becomes_one_record() -> None:
    record = emf_record(
        "AutoBio/Illustrator",
        "memory",
        "succeeded",
        {"queue_wait": 120, "download": 35, "generate": 2900, "upload": 60, "total": 3100},
        1_700_000_000_000,
    )
    _check_emf(record)
    json.dumps(record)  # one JSON line
    assert record["Kind"] == "memory"
    assert record["Status"] == "succeeded"
    assert record["Jobs"] == 1
    assert record["QueueWaitSeconds"] == 0.12
    assert record["GenerateSeconds"] == 2.9
    assert record["TotalSeconds"] == 3.1
    namespaces = {d["Namespace"] for d in record["_aws"]["CloudWatchMetrics"]}
    assert namespaces == {"AutoBio/Illustrator"}


def test_a_job_that_failed_early_has_no_durations_it_did_not_reach() -> None:
    record = emf_record("ns", None, "failed", {"queue_wait": 5, "total": 7}, 1)
    _check_emf(record)
    assert record["Kind"] == "unknown"
    assert "GenerateSeconds" not in record
    assert record["TotalSeconds"] == 0.007


def test_a_checked_job_counts_its_checked_flagged_and_redrawn_pictures() -> None:
    record = emf_record(
        "AutoBio/Illustrator",
        "subject",
        "succeeded",
        {"generate": 2900, "safety": 40, "total": 3100},
        1_700_000_000_000,
        {"checked": 5, "flagged": 1, "redraws": 1},
    )
    _check_emf(record)
    assert (record["PicturesChecked"], record["PicturesFlagged"], record["PicturesRedrawn"]) == (
        5,
        1,
        1,
    )
    counted = [d for d in record["_aws"]["CloudWatchMetrics"] if d["Metrics"][0]["Unit"] == "Count"]
    names = {m["Name"] for d in counted for m in d["Metrics"]}
    assert names == {"Jobs", "PicturesChecked", "PicturesFlagged", "PicturesRedrawn"}
    unchecked = emf_record("AutoBio/Illustrator", "subject", "succeeded", {}, 1)
    assert "PicturesChecked" not in unchecked
