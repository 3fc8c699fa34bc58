"""One group's scaling policies, run every minute on the data points CloudWatch has.

Each mirrors a resource of infra/illustrator.yaml:

- target tracking (scale-out; and scale-in too, where the policy keeps it):
  the tracked metric of every data point, its two alarms, the proportional
  capacity over the instances past their warm-up, the gradual scale-in;
- the wake policy: a step policy whose alarm reads the instances the waiting
  work asks for while the group has none, and sets the capacity to a rung;
- the idle scale-in: a simple policy whose alarm reads the GPUs left idle all
  through minutes with nothing waiting, and removes one instance (so never
  below the requests running) once per cooldown;
- the empty scale-in: a simple policy that sets the capacity to zero after
  minutes in which nothing waited or ran.

A group marked overflow sees its metrics only while the groups before it are
at their MaxSize; a group before an overflow group scales in only once the
overflow group is empty.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.fleet_policy import (
    Alarm,
    scale_in_alarm,
    scale_in_capacity,
    scale_out_alarm,
    scale_out_capacity,
)

if TYPE_CHECKING:
    from bench.fleet_model import Point, Simulation


def gpus_in_service(sim: Simulation, point: Point) -> float:
    """GPUs in service over all groups in a minute (GroupInServiceInstances x GPUs)."""
    return sum(n * g.kind.gpus for n, g in zip(point.in_service, sim.groups, strict=True))


def _open(sim: Simulation, group: int, point: Point) -> bool:
    """Whether an overflow group may grow: every group before it is at MaxSize."""
    if not sim.groups[group].overflow:
        return True
    return all(point.desired[n] >= sim.groups[n].max_size for n in range(group))


def _may_shrink(sim: Simulation, group: int, point: Point) -> bool:
    """Whether a group may scale in: every overflow group after it is empty."""
    later = range(group + 1, len(sim.groups))
    return all(point.desired[n] == 0 for n in later if sim.groups[n].overflow)


def tracked(sim: Simulation, group: int, point: Point) -> float:
    """The group's tracked metric in one minute (0 while its gate is shut)."""
    if not _open(sim, group, point):
        return 0.0
    return sim.policy.tracked(point.work, gpus_in_service(sim, point), point.seconds)


def wanted(sim: Simulation, group: int, point: Point) -> float:
    """The wake alarm's metric: instances the work asks for beyond the groups
    before this one, while this group has none (else 0)."""
    if point.desired[group] > 0 or not _open(sim, group, point):
        return 0.0
    spec = sim.groups[group]
    need = sim.policy.instances_wanted(point.work, spec.kind.gpus, point.seconds)
    if not spec.overflow:
        return need
    before = sum(sim.groups[n].max_size for n in range(group))
    return need * sim.policy.target / target(sim, group) - before


def idle_instances(sim: Simulation, group: int, point: Point) -> float:
    """The idle alarm's metric: instances' worth of GPUs idle all through a
    minute nothing waited in, for a group that may shrink (else 0)."""
    if point.waiting_max > 0 or not _may_shrink(sim, group, point):
        return 0.0
    idle = gpus_in_service(sim, point) - point.running_max
    return max(0.0, idle) / sim.groups[group].kind.gpus


def empty(point: Point) -> float:
    """The empty alarm's metric: 1 in a minute nothing waited or ran in."""
    return 1.0 if point.waiting_max == 0 and point.running_max == 0 else 0.0


def target(sim: Simulation, group: int) -> float:
    """The group's target: an overflow group waits a cold start longer, so it
    starts only for work that would outlast one."""
    extra = sim.policy.cold_start_s if sim.groups[group].overflow else 0.0
    return sim.policy.target + (extra if sim.policy.target_wait_s is not None else 0.0)


def evaluate_group(sim: Simulation, t: float, group: int, seen: list[Point]) -> None:
    """Run the group's policies at `t` on the visible data points `seen`."""
    policy = sim.policy
    goal = target(sim, group)
    metric = [tracked(sim, group, p) for p in seen]
    members = [i for i in sim.instances if i.group == group]
    starting = any(i.state == "starting" for i in members)
    leaving = any(i.state == "leaving" for i in members)
    if scale_out_alarm(goal).in_alarm(metric):
        counted = sum(1 for i in members if i.state == "serving" and i.ready + policy.warmup_s <= t)
        if counted:
            capacity = scale_out_capacity(metric[-1], goal, counted)
            if capacity > sim.desired[group]:
                sim.scale_to(t, group, capacity)
    rung = policy.wake_capacity(wanted(sim, group, seen[-1]))
    if rung:
        sim.scale_to(t, group, rung)  # ExactCapacity, every minute in ALARM
    if policy.tracking_scale_in and not starting and scale_in_alarm(goal).in_alarm(metric):
        current = sum(1 for i in members if i.state in ("starting", "serving", "leaving"))
        capacity = scale_in_capacity(metric[-1], goal, current)
        if capacity < sim.desired[group]:
            sim.scale_to(t, group, capacity)
    if policy.tracking_scale_in or not sim.desired[group]:
        return
    if Alarm(1.0, policy.empty_minutes, inclusive=True).in_alarm([empty(p) for p in seen]):
        sim.scale_to(t, group, 0)  # ExactCapacity 0 (MinSize still holds)
        return
    idle = Alarm(1.0, policy.idle_minutes, inclusive=True)
    shares = [idle_instances(sim, group, p) for p in seen]
    if not (starting or leaving) and t >= sim.cooldown_until[group] and idle.in_alarm(shares):
        sim.scale_to(t, group, sim.desired[group] - 1)
        sim.cooldown_until[group] = t + policy.idle_cooldown_s
