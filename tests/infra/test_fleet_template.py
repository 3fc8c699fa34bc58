"""infra/illustrator.yaml, the fleet's parts: alarms over both queues, the
alarms on the workers' metric records, the dashboard, the embedded start-up
scripts, and the producer's grant on the priority queue (the scaling policy
and the warm pool: test_scaling.py, test_warm_pool.py)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "illustrator.yaml"
sys.path.insert(0, str(ROOT / "infra"))
import embed_scripts  # noqa: E402


@pytest.fixture(scope="module")
def resources() -> dict[str, Any]:
    """The template's resources by logical id, intrinsic functions kept as dicts."""
    found: dict[str, Any] = cfn_yaml.load(str(TEMPLATE))["Resources"]
    return found


def _queues_of(metrics: list[dict[str, Any]], name: str) -> set[str]:
    """The queues whose metric `name` an alarm or policy reads."""
    return {
        m["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
        for m in metrics
        if "MetricStat" in m and m["MetricStat"]["Metric"]["MetricName"] == name
    }


def _returned(metrics: list[dict[str, Any]]) -> Any:
    [expression] = [m["Expression"] for m in metrics if m.get("ReturnData", True)]
    return expression


def test_alarms_cover_both_queues_dead_letters_old_requests_and_stalled_backlog(
    resources: dict[str, Any],
) -> None:
    dlq = resources["DeadLetterNotEmptyAlarm"]["Properties"]
    assert _queues_of(dlq["Metrics"], "ApproximateNumberOfMessagesVisible") == {
        "DeadLetterQueue",
        "PriorityDeadLetterQueue",
    }
    assert (dlq["Threshold"], dlq["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    assert _returned(dlq["Metrics"]) == "FILL(dlq, 0) + FILL(priority_dlq, 0)"
    oldest = resources["OldestRequestTooOldAlarm"]["Properties"]
    assert _queues_of(oldest["Metrics"], "ApproximateAgeOfOldestMessage") == {
        "RequestQueue",
        "PriorityQueue",
    }
    assert _returned(oldest["Metrics"]).startswith("MAX([")
    stalled = resources["StalledBacklogAlarm"]["Properties"]["Metrics"]
    for name in ("ApproximateNumberOfMessagesVisible", "NumberOfMessagesDeleted"):
        assert _queues_of(stalled, name) == {"RequestQueue", "PriorityQueue"}


def _jobs_dimensions(metrics: list[dict[str, Any]]) -> set[tuple[str, str]]:
    found = set()
    for m in metrics:
        if "MetricStat" in m:
            metric = m["MetricStat"]["Metric"]
            assert metric["Namespace"] == {"Ref": "MetricsNamespace"}
            assert metric["MetricName"] == "Jobs"
            dims = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
            assert set(dims) == {"Kind", "Status"}
            found.add((dims["Kind"], dims["Status"]))
    return found


def test_failure_rate_alarm_reads_jobs_by_kind_and_status(resources: dict[str, Any]) -> None:
    alarm = resources["FailureRateAlarm"]["Properties"]
    assert _jobs_dimensions(alarm["Metrics"]) == {
        ("memory", "failed"),
        ("subject", "failed"),
        ("unknown", "failed"),
        ("memory", "succeeded"),
        ("subject", "succeeded"),
    }
    expressions = {m["Id"]: m["Expression"] for m in alarm["Metrics"] if "Expression" in m}
    assert expressions["failure_rate"] == {
        "Fn::Sub": "IF(finished >= ${FailureRateMinJobs}, 100 * failed / finished, 0)"
    }
    assert alarm["Threshold"] == {"Ref": "FailureRateAlarmPercent"}


def test_failure_rate_expression_computes_the_share_of_failed_jobs(
    resources: dict[str, Any],
) -> None:
    # Evaluate the alarm's expressions on sample sums: 2 failed of 20.
    metrics = resources["FailureRateAlarm"]["Properties"]["Metrics"]
    values: dict[str, float] = {
        "failed_memory": 1,
        "failed_subject": 0,
        "failed_unknown": 1,
        "succeeded_memory": 12,
        "succeeded_subject": 6,
    }
    for m in metrics:
        if "Expression" not in m:
            continue
        text = m["Expression"]
        text = (
            text["Fn::Sub"].replace("${FailureRateMinJobs}", "5")
            if isinstance(text, dict)
            else text
        )
        python = re.sub(r"FILL\((\w+), 0\)", r"\1", text)
        python = re.sub(r"IF\((.+?), (.+), (\S+)\)$", r"(\2 if \1 else \3)", python)
        values[m["Id"]] = eval(python, {}, dict(values))  # the template's own text
    assert values["failure_rate"] == pytest.approx(10.0)


def test_generation_p95_alarm_covers_both_kinds(resources: dict[str, Any]) -> None:
    alarm = resources["GenerateP95Alarm"]["Properties"]
    stats = {
        (m["MetricStat"]["Metric"]["Dimensions"][0]["Value"], m["MetricStat"]["Stat"])
        for m in alarm["Metrics"]
        if "MetricStat" in m
    }
    assert stats == {("memory", "p95"), ("subject", "p95")}
    assert {
        m["MetricStat"]["Metric"]["MetricName"] for m in alarm["Metrics"] if "MetricStat" in m
    } == {"GenerateSeconds"}
    assert alarm["Threshold"] == {"Ref": "GenerateP95AlarmSeconds"}


def test_dashboard_is_json_with_the_fleet_widgets(resources: dict[str, Any]) -> None:
    body = resources["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    # What CloudFormation substitutes: names stand in for the ${...} references.
    filled = re.sub(
        r"\$\{([^}]+)\}",
        lambda m: "7" if "Alarm" in m[1] or "Gpus" in m[1] else m[1].replace('"', ""),
        body,
    )
    widgets = json.loads(filled)["widgets"]
    titles = [w["properties"]["title"] for w in widgets]
    assert titles == [
        "Backlog (waiting requests)",
        "Age of the oldest request (s)",
        "Dead-letter queues",
        "Workers",
        "Jobs per minute",
        "Failure rate (% of finished jobs, 5 min)",
        "Generation time (s), p50 and p95",
        "Queue wait and total time (s), p95",
    ]
    text = json.dumps(widgets)
    for name in ("RequestQueue", "PriorityQueue", "DeadLetterQueue", "PriorityDeadLetterQueue"):
        assert f"{name}.QueueName" in text
    generate = widgets[6]["properties"]["metrics"]
    assert [row[-1]["stat"] for row in generate] == ["p50", "p95", "p50", "p95"]
    assert "GroupInServiceInstances" in json.dumps(widgets[3])


def test_user_data_holds_the_scripts_verbatim() -> None:
    current = TEMPLATE.read_text(encoding="utf-8")
    assert embed_scripts.embed(current) == current, "run python infra/embed_scripts.py"
    assert embed_scripts.main(["--check"]) == 0


def test_embed_detects_and_repairs_a_stale_copy(tmp_path: Path) -> None:
    (tmp_path / "infra").mkdir()
    (tmp_path / "infra" / "a.sh").write_text("#!/bin/bash\necho new\n\necho end\n")
    stale = "x:\n  - | # file: infra/a.sh\n    #!/bin/bash\n    echo old\n  - |\n    after\n"
    fixed = embed_scripts.embed(stale, tmp_path)
    assert fixed == (
        "x:\n  - | # file: infra/a.sh\n    #!/bin/bash\n    echo new\n\n    echo end\n"
        "  - |\n    after\n"
    )
    assert embed_scripts.embed(fixed, tmp_path) == fixed


def test_producer_may_send_to_both_queues(resources: dict[str, Any]) -> None:
    statements = resources["QueuesPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    producer = statements[1]["Fn::If"][1]
    assert producer["Resource"] == [
        {"Fn::GetAtt": ["RequestQueue", "Arn"]},
        {"Fn::GetAtt": ["PriorityQueue", "Arn"]},
    ]
    assert "sqs:ReceiveMessage" not in producer["Action"]


def test_cancellation_markers_expire_after_thirty_days(resources: dict[str, Any]) -> None:
    rules = resources["Bucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    [rule] = [r for r in rules if r["Id"] == "ExpireCancellations"]
    assert rule == {
        "Id": "ExpireCancellations",
        "Status": "Enabled",
        "Prefix": {"Ref": "CancelPrefix"},
        "ExpirationInDays": 30,
    }
