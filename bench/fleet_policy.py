"""The scaling policy of infra/illustrator.yaml, and AWS's own rules that run it.

AWS's numbers, as AWS documents them (tests/bench/test_fleet_sim.py quotes
each source next to the test that checks the simulation obeys it):

- A target tracking policy acts through two alarms that Auto Scaling creates:
  the scale-out alarm when the metric is above the target for 3 data points
  within 3 minutes, the scale-in alarm when it is below 90 % of the target
  (a threshold "usually more than 10 % lower") for 15 data points within 15
  minutes. Data points are one-minute periods.
- It scales out proportionally to the metric as fast as it can and scales in
  gradually; a scale-in cannot start while a scale-out is in progress.
- Instances that are warming up do not count as current capacity when it
  scales out (so it adds none twice); terminating instances count when it
  scales in.
- An alarm whose action is a scaling policy invokes it again for every
  period it stays in ALARM.
- A simple scaling policy waits for its scaling activity to complete and
  its cooldown to pass before it answers the alarm again.
- A warm pool holds the group's maximum prepared capacity (by default its
  MaxSize) minus its desired capacity, and at least its own MinSize; it is
  not allowed on a group with a mixed instances policy or Spot Instances.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

PERIOD_S = 60.0
SCALE_OUT_DATAPOINTS = 3
SCALE_IN_DATAPOINTS = 15
SCALE_IN_FRACTION = 0.9


@dataclass(frozen=True)
class Alarm:
    """A CloudWatch alarm that needs `datapoints` breaching data points in a row
    (missing data does not breach, as ``TreatMissingData: notBreaching``)."""

    threshold: float
    datapoints: int
    above: bool = True
    inclusive: bool = False

    def breaches(self, value: float | None) -> bool:
        """Whether one data point breaches the threshold."""
        if value is None:
            return False
        if self.inclusive and value == self.threshold:
            return True
        return value > self.threshold if self.above else value < self.threshold

    def in_alarm(self, values: Sequence[float | None]) -> bool:
        """The state after the latest of `values` (oldest first)."""
        recent = values[-self.datapoints :]
        return len(recent) == self.datapoints and all(self.breaches(v) for v in recent)


def scale_out_alarm(target: float) -> Alarm:
    """Target tracking's scale-out alarm."""
    return Alarm(target, SCALE_OUT_DATAPOINTS)


def scale_in_alarm(target: float) -> Alarm:
    """Target tracking's scale-in alarm."""
    return Alarm(target * SCALE_IN_FRACTION, SCALE_IN_DATAPOINTS, above=False)


def scale_out_capacity(metric: float, target: float, counted: int) -> int:
    """Capacity target tracking asks for: proportional to the metric, over the
    instances the metric counts (those past their warm-up), rounded up."""
    return math.ceil(counted * metric / target - 1e-9)


def scale_in_capacity(metric: float, target: float, current: int) -> int:
    """Capacity after one gradual scale-in step: the proportional capacity
    (rounded up, so never too little), but at most one instance fewer."""
    return max(current - 1, math.ceil(current * metric / target - 1e-9))


def warm_pool_size(pool_min: int, max_prepared: int, desired: int) -> int:
    """Instances a warm pool keeps prepared beside `desired` in service."""
    return max(pool_min, max_prepared - desired)


@dataclass(frozen=True)
class Policy:
    """The template's scaling parameters, and the timings they run against.

    With `target_wait_s` the group tracks seconds of work per in-service GPU
    (requests waiting or running x seconds per picture / GPUs) against it,
    which is the backlog per GPU tracked to ``target_wait_s / seconds per
    picture``, at least 1. Seconds per picture is the workers' measured mean
    (their ``TotalSeconds`` records) when `measured`, else, and whenever no job
    finished in the minute, `seconds_per_picture`. Without it the group tracks
    requests per GPU against `backlog_per_gpu`, as the template did before.
    """

    target_wait_s: float | None = 120.0
    seconds_per_picture: float = 22.0
    measured: bool = True
    backlog_per_gpu: float = 10.0
    # Scale-in: target tracking's own (gradual, after 15 low minutes), or two
    # simple policies that wait for an empty queue: one instance fewer after
    # `idle_minutes` in which a whole instance's GPUs stayed idle, then a
    # cooldown; none after `empty_minutes` with nothing waiting or running.
    tracking_scale_in: bool = False
    idle_minutes: int = 5
    idle_cooldown_s: float = 180.0
    empty_minutes: int = 5
    # The wake-from-zero policy sets the capacity from the work waiting:
    # (instances wanted at least, capacity) rungs; the old template added one.
    wake_ladder: tuple[tuple[float, int], ...] = (
        (0.0, 1),
        (2.0, 2),
        (4.0, 4),
        (8.0, 8),
        (16.0, 16),
    )
    # Starting an instance: cold (boot, image pull, weights, model load) or
    # from a stopped warm-pool instance (boot, model load from its volume).
    cold_start_s: float = 600.0
    warm_start_s: float = 150.0
    # The launch hook holds an instance in Pending:Wait until a worker is
    # healthy; without it the instance counts as in service while it boots.
    launch_hook: bool = True
    warmup_s: float = 180.0
    metric_delay_s: float = 120.0
    count_in_flight: bool = True

    @property
    def target(self) -> float:
        """The target value of the tracked metric."""
        return self.target_wait_s if self.target_wait_s is not None else self.backlog_per_gpu

    def seconds_of(self, measured: float | None) -> float:
        """Seconds per picture the policy uses for a minute."""
        if self.measured and measured is not None:
            return measured
        return self.seconds_per_picture

    def tracked(self, work: float, gpus_in_service: float, measured: float | None) -> float:
        """The tracked metric, as the template's expression computes it."""
        per_gpu = work / gpus_in_service if gpus_in_service > 0 else work
        if self.target_wait_s is None:
            return per_gpu
        # IF(spp > wait, per_gpu * wait, per_gpu * spp): the backlog target
        # wait / spp never drops below one request per GPU.
        return per_gpu * min(self.seconds_of(measured), self.target_wait_s)

    def instances_wanted(self, work: float, gpus: int, measured: float | None) -> float:
        """Instances the work asks for at the target (the wake policy's metric)."""
        if self.target_wait_s is None:
            return work / (gpus * self.backlog_per_gpu)
        return work * self.seconds_of(measured) / (gpus * self.target_wait_s)

    def wake_capacity(self, wanted: float) -> int:
        """Capacity the wake policy sets for `wanted` instances (0: no rung)."""
        rungs = [capacity for floor, capacity in self.wake_ladder if wanted > floor]
        return rungs[-1] if rungs else 0


# The template before the wait objective: BacklogPerGpu 10, target tracking
# in and out, one instance from zero, no launch hook, a 600 s warm-up.
BEFORE = Policy(
    target_wait_s=None,
    tracking_scale_in=True,
    wake_ladder=((0.0, 1),),
    launch_hook=False,
    warmup_s=600.0,
)

# The template's policy now: its parameters' defaults.
TEMPLATE = Policy()
