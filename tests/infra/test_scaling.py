"""infra/illustrator.yaml, the scaling policy: a wait objective tracked by target
tracking (scale-out only), the wake from zero, the scale-in that waits for an
empty queue, and the Spot/mixed group that takes only the overflow.

The expressions run on sample values through tests/infra/metric_math.py, on
the template as CloudFormation resolves it for the given parameters.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra.cfn import QUEUE_SUFFIX, Resolved, load_template
from tests.infra.metric_math import evaluate

VISIBLE, NOT_VISIBLE = "ApproximateNumberOfMessagesVisible", "ApproximateNumberOfMessagesNotVisible"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def _metrics(template: dict[str, Any], name: str, **parameters: str) -> list[dict[str, Any]]:
    resolved = Resolved(template, parameters).resource(name)
    if "TargetTrackingConfiguration" in resolved:
        spec = resolved["TargetTrackingConfiguration"]["CustomizedMetricSpecification"]
        found: list[dict[str, Any]] = spec["Metrics"]
        return found
    metrics: list[dict[str, Any]] = resolved["Metrics"]
    return metrics


def _reads(metrics: list[dict[str, Any]]) -> dict[str, tuple[str, str, str]]:
    """Each metric's (name, dimension value, statistic) by id."""
    return {
        m["Id"]: (
            m["MetricStat"]["Metric"]["MetricName"],
            next(iter(d["Value"] for d in m["MetricStat"]["Metric"].get("Dimensions", [])), ""),
            m["MetricStat"]["Stat"],
        )
        for m in metrics
        if "MetricStat" in m
    }


def _queues(waiting: float, running: float = 0.0) -> dict[str, float | None]:
    """Requests of the request queue; the priority queue idle (no data points)."""
    return {"backlog": waiting, "priority": None, "in_flight": running, "priority_in_flight": None}


def test_target_tracking_follows_the_wait_objective_and_only_scales_out(
    template: dict[str, Any],
) -> None:
    policy = Resolved(template).resource("WaitTracking")
    assert policy["AutoScalingGroupName"] == "illustrator-WarmGroup"  # the warm group first
    config = policy["TargetTrackingConfiguration"]
    assert config["TargetValue"] == "120"  # TargetWaitSeconds
    # Its own scale-in reads an idle-looking queue as no work and flaps;
    # ScaleInIdle and ScaleInEmpty scale in instead.
    assert config["DisableScaleIn"] is True
    reads = _reads(_metrics(template, "WaitTracking"))
    assert reads == {
        "backlog": (VISIBLE, f"illustrator-RequestQueue-{QUEUE_SUFFIX}", "Average"),
        "priority": (VISIBLE, f"illustrator-PriorityQueue-{QUEUE_SUFFIX}", "Average"),
        "in_flight": (NOT_VISIBLE, f"illustrator-RequestQueue-{QUEUE_SUFFIX}", "Average"),
        "priority_in_flight": (NOT_VISIBLE, f"illustrator-PriorityQueue-{QUEUE_SUFFIX}", "Average"),
        "workers": ("GroupInServiceInstances", "illustrator-WorkerGroup", "Average"),
        "warm_workers": ("GroupInServiceInstances", "illustrator-WarmGroup", "Average"),
        # The workers' EMF records: TotalSeconds per request, fleet-wide (no dimension).
        "measured": ("TotalSeconds", "", "Average"),
    }
    measured = next(m for m in _metrics(template, "WaitTracking") if m["Id"] == "measured")
    assert measured["MetricStat"]["Metric"]["Namespace"] == "AutoBio/Illustrator"
    assert "Dimensions" not in measured["MetricStat"]["Metric"]


@pytest.mark.parametrize(
    ("seconds", "wait", "backlog_target"),
    [
        ("22", "120", 120 / 22),  # the default: about 5.5 requests per GPU
        ("2.5", "120", 48.0),  # an H100
        ("15", "3600", 240.0),  # a nightly batch
        ("300", "120", 1.0),  # slower than the wait: the floor of one request per GPU
    ],
)
def test_the_tracked_backlog_per_gpu_is_the_wait_over_seconds_per_picture_at_least_one(
    template: dict[str, Any], seconds: str, wait: str, backlog_target: float
) -> None:
    metrics = _metrics(
        template,
        "WaitTracking",
        TargetWaitSeconds=wait,
        SecondsPerPicture=seconds,
        MeasuredSecondsPerPicture="false",
    )
    target = float(wait)

    def metric(per_gpu: float) -> float:
        # Two GPUs in service (one per group), so work = 2 x backlog per GPU.
        values = {**_queues(per_gpu * 2 - 1, 1), "workers": 1, "warm_workers": 1}
        return evaluate(metrics, values)

    assert metric(backlog_target * 1.01) > target
    assert metric(backlog_target * 0.99) < target
    # Proportional, as target tracking needs: twice the backlog, twice the metric.
    assert metric(backlog_target * 2) == pytest.approx(2 * metric(backlog_target))


def test_the_measured_seconds_per_picture_win_and_the_parameter_fills_in(
    template: dict[str, Any],
) -> None:
    metrics = _metrics(template, "WaitTracking", SecondsPerPicture="22")
    base = {**_queues(9, 1), "workers": 2, "warm_workers": None}
    # 10 requests on 2 GPUs at 2.5 s: 12.5 s of work per GPU, far under 120 s.
    assert evaluate(metrics, {**base, "measured": 2.5}) == pytest.approx(12.5)
    # No job finished in the minute (no data point): SecondsPerPicture.
    assert evaluate(metrics, {**base, "measured": None}) == pytest.approx(5 * 22)
    # With no worker in service, the work counts as one GPU's.
    idle = {**_queues(3), "workers": 0, "warm_workers": 0, "measured": None}
    assert evaluate(metrics, idle) == pytest.approx(3 * 22)


def _ladder(policy: dict[str, Any], value: float) -> int:
    """The capacity a step policy sets for an alarm metric `value` above threshold 0."""
    for step in policy["StepAdjustments"]:
        low = step.get("MetricIntervalLowerBound", float("-inf"))
        high = step.get("MetricIntervalUpperBound", float("inf"))
        if low <= value < high:
            return int(step["ScalingAdjustment"])
    raise AssertionError(f"no step for {value}")


def test_wake_from_zero_sets_the_capacity_from_the_work(template: dict[str, Any]) -> None:
    resolved = Resolved(template)
    wake = resolved.resource("WakeFromZero")
    assert (wake["PolicyType"], wake["AdjustmentType"]) == ("StepScaling", "ExactCapacity")
    alarm = resolved.resource("WakeFromZeroAlarm")
    assert alarm["AlarmActions"] == ["illustrator-WakeFromZero"]
    assert (alarm["ComparisonOperator"], alarm["Threshold"], alarm["EvaluationPeriods"]) == (
        "GreaterThanThreshold",
        0,
        1,
    )
    metrics = _metrics(template, "WakeFromZeroAlarm")
    assert _reads(metrics)["desired"] == (
        "GroupDesiredCapacity",
        "illustrator-WarmGroup",
        "Maximum",
    )

    def capacity(waiting: int, desired: int = 0) -> int:
        value = evaluate(metrics, {**_queues(waiting), "desired": desired, "measured": None})
        return _ladder(wake, value) if value > 0 else 0

    # At 22 s a picture and a 120 s wait: a few pictures, one instance; 15
    # ask for 2.75 instances, 60 for 11; a whole book of 300 for 55, so the
    # largest rung (within MaxSize).
    assert [capacity(n) for n in (1, 5, 15, 30, 60, 300)] == [1, 1, 2, 4, 8, 16]
    assert capacity(300, desired=1) == 0  # target tracking's job from there


def test_scale_in_waits_for_an_empty_queue_and_keeps_the_running_work(
    template: dict[str, Any],
) -> None:
    resolved = Resolved(template)
    policy = resolved.resource("ScaleInIdle")
    assert (policy["PolicyType"], policy["AdjustmentType"], policy["ScalingAdjustment"]) == (
        "SimpleScaling",
        "ChangeInCapacity",
        -1,
    )
    assert policy["Cooldown"] == "180"  # longer than the metrics' delay
    alarm = resolved.resource("ScaleInIdleAlarm")
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanOrEqualToThreshold", 1)
    assert alarm["EvaluationPeriods"] == alarm["DatapointsToAlarm"] == "5"
    metrics = _metrics(template, "ScaleInIdleAlarm")
    reads = _reads(metrics)
    assert {reads[i][2] for i in ("backlog", "priority", "in_flight", "priority_in_flight")} == {
        "Maximum"  # the busiest moment of the minute
    }

    def idle(waiting: int, running: int, gpus: int = 4, overflow: int = 0) -> float:
        values = {**_queues(waiting, running), "workers": 0, "warm_workers": gpus}
        return evaluate(metrics, {**values, "overflow_desired": overflow})

    assert idle(0, 3) >= 1  # one of four GPUs idle all minute: one instance may go
    assert idle(0, 4) < 1  # all busy at some moment: none
    assert idle(1, 0) < 1  # a request waited: none
    assert idle(0, 0, overflow=1) < 1  # the Spot/mixed group goes first


def test_an_empty_fleet_goes_to_zero_in_both_groups(template: dict[str, Any]) -> None:
    resolved = Resolved(template)
    alarm = resolved.resource("ScaleInEmptyAlarm")
    assert alarm["AlarmActions"] == ["illustrator-ScaleInEmpty", "illustrator-OverflowScaleInEmpty"]
    for name in ("ScaleInEmpty", "OverflowScaleInEmpty"):
        policy = resolved.resource(name)
        assert (policy["AdjustmentType"], policy["ScalingAdjustment"]) == ("ExactCapacity", 0)
    metrics = _metrics(template, "ScaleInEmptyAlarm")
    assert evaluate(metrics, _queues(0, 0)) == 1
    assert evaluate(metrics, _queues(0, 1)) == 0
    assert evaluate(metrics, _queues(1, 0)) == 0
    assert alarm["EvaluationPeriods"] == alarm["DatapointsToAlarm"] == "5"


def test_the_spot_group_takes_only_what_outlasts_a_full_warm_group(
    template: dict[str, Any],
) -> None:
    resolved = Resolved(template)
    tracking = resolved.resource("OverflowTracking")
    assert tracking["AutoScalingGroupName"] == "illustrator-WorkerGroup"
    assert tracking["TargetTrackingConfiguration"]["DisableScaleIn"] is True
    metrics = _metrics(template, "OverflowTracking")
    base = {**_queues(95, 16), "workers": 0, "warm_workers": 16, "measured": 22.0}
    # 111 requests on 16 GPUs at 22 s: 153 s per GPU, over the 120 s target
    # but not beyond a cold start more (720 s): the Spot group waits.
    assert evaluate(metrics, {**base, "warm_desired": 16}) < 120
    heavy = {**base, **_queues(600, 16)}
    assert evaluate(metrics, {**heavy, "warm_desired": 16}) > 120
    assert evaluate(metrics, {**heavy, "warm_desired": 15}) == 0  # the warm group can grow
    wake = _metrics(template, "OverflowWakeAlarm")
    values = {**_queues(600, 16), "desired": 0, "measured": 22.0}
    assert evaluate(wake, {**values, "warm_desired": 16}) > 0
    assert evaluate(wake, {**values, "warm_desired": 12}) == 0
    small = {**_queues(200, 16), "desired": 0, "measured": 22.0, "warm_desired": 16}
    assert evaluate(wake, small) <= 0  # work the full warm group gets through first
    idle = _metrics(template, "OverflowScaleInIdleAlarm")
    assert evaluate(idle, {**_queues(0, 14), "workers": 2, "warm_workers": 16}) >= 1


def test_without_the_warm_pool_one_group_runs_every_policy(template: dict[str, Any]) -> None:
    resolved = Resolved(template, {"WarmPool": "false"})
    assert resolved.conditions["HasWarmPool"] is False
    for name in ("WaitTracking", "WakeFromZero", "ScaleInIdle", "ScaleInEmpty"):
        assert resolved.resource(name)["AutoScalingGroupName"] == "illustrator-WorkerGroup"
    conditional = {
        name
        for name, body in template["Resources"].items()
        if body.get("Condition") == "HasWarmPool"
    }
    assert conditional == {
        "WarmGroup",
        "WorkerWarmPool",
        "OverflowTracking",
        "OverflowWake",
        "OverflowWakeAlarm",
        "OverflowScaleInIdle",
        "OverflowScaleInIdleAlarm",
        "OverflowScaleInEmpty",
    }
    assert resolved.resource("ScaleInEmptyAlarm")["AlarmActions"] == ["illustrator-ScaleInEmpty"]
    metrics = _metrics(template, "WaitTracking", WarmPool="false")
    assert "warm_workers" not in _reads(metrics)
    values = {**_queues(9, 1), "workers": 2, "measured": 2.5}
    assert evaluate(metrics, values) == pytest.approx(12.5)
    idle = _metrics(template, "ScaleInIdleAlarm", WarmPool="false")
    assert evaluate(idle, {**_queues(0, 1), "workers": 2}) >= 1
