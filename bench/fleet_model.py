"""Discrete-event simulation of the worker groups under their scaling policy.

Requests wait in one FIFO queue; each GPU of an in-service instance runs one
worker, which takes the oldest waiting request when idle. Every minute the
closing minute becomes one data point of each CloudWatch metric the policy
reads, visible `metric_delay_s` later; then every group runs its policies
(bench/fleet_policy.py) on the data points it can see.

Groups are tried in order: the first serves first and scales out first; a
group marked `overflow` scales out only while the groups before it are at
their MaxSize, and scales in before them. A group with a warm pool starts
stopped, prepared instances before it launches cold ones, refills the pool
(an instance launched into it runs for a cold start, then stops), and takes
scaled-in instances back. A scaled-in instance takes no new request and
leaves when its running ones are done (the drain); which one goes is the
pending, else the idle, else the least busy.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.fleet_policy import PERIOD_S, SCALE_IN_DATAPOINTS, Policy, warm_pool_size
from bench.fleet_scaling import evaluate_group

HOUR = 3600.0
# A 150 GiB gp3 root volume at USD 0.08 per GiB-month: paid while the
# instance exists, running or stopped in a warm pool.
VOLUME_HOURLY = 150 * 0.08 / 730


@dataclass(frozen=True)
class InstanceType:
    """A GPU instance type: GPUs, hourly prices, and generation time relative to the reference."""

    name: str
    gpus: int
    on_demand: float
    spot: float
    speed: float = 1.0


@dataclass(frozen=True)
class Group:
    """One Auto Scaling group: its instance type, sizes and warm pool."""

    kind: InstanceType
    min_size: int = 0
    max_size: int = 8
    warm_pool: int | None = None  # the pool's MinSize; None: no warm pool
    overflow: bool = False


@dataclass(eq=False)  # instances are told apart by identity
class Instance:
    """One instance: running intervals (billed) and its life (its volume)."""

    group: int
    gpus: int
    created: float
    ready: float = math.inf
    busy: int = 0
    state: str = "starting"  # starting, serving, leaving, warming, stopped, gone
    ended: float | None = None
    runs: list[list[float]] = field(default_factory=list)

    def start(self, t: float, ready: float, state: str = "starting") -> None:
        """Run from `t` (billed), in service (or stopped, when warming) at `ready`."""
        self.runs.append([t, math.inf])
        self.ready, self.state = ready, state

    def stop(self, t: float, state: str) -> None:
        """Stop running at `t`: into the warm pool, or gone."""
        self.runs[-1][1] = t
        self.state = state
        if state == "gone":
            self.ended = t


@dataclass
class Point:
    """One minute of the metrics the policies read."""

    end: float
    work: float  # requests waiting (and running, when counted): minute's average
    waiting_max: int
    running_max: int
    in_service: list[float]  # per group: instances in service, minute's average
    desired: list[int]  # per group, at the end of the minute
    seconds: float | None  # mean seconds per finished request (TotalSeconds)


@dataclass
class Result:
    """What one run measured."""

    waits: list[float]
    finished: list[float]
    instances: list[Instance]
    groups: Sequence[Group]
    end: float
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # t, waiting, GPUs
    last_arrival: float = 0.0

    @property
    def pictures(self) -> int:
        """Requests served."""
        return len(self.waits)

    def running_hours(self, group: int | None = None) -> float:
        """Billed instance-hours (of one group, or all)."""
        return (
            sum(
                min(b, self.end) - a
                for i in self.instances
                if group is None or i.group == group
                for a, b in i.runs
            )
            / HOUR
        )

    @property
    def gpu_hours(self) -> float:
        """Billed GPU-hours."""
        gpus = [g.kind.gpus for g in self.groups]
        return sum(self.running_hours(n) * gpus[n] for n in range(len(self.groups)))

    def cost(self, spot: bool) -> float:
        """USD for the run: running hours at On-Demand prices, or at Spot prices
        for the groups that may launch Spot, plus every volume while it exists."""
        total = 0.0
        for n, group in enumerate(self.groups):
            # A group with a warm pool cannot launch Spot Instances.
            on_spot = spot and group.warm_pool is None
            price = group.kind.spot if on_spot else group.kind.on_demand
            total += self.running_hours(n) * price
        volumes = sum(((i.ended or self.end) - i.created) for i in self.instances) / HOUR
        return total + volumes * VOLUME_HOURLY

    def cost_per_1000(self, spot: bool) -> float:
        """USD per 1000 pictures."""
        return self.cost(spot) / max(self.pictures, 1) * 1000

    def percentile(self, q: float) -> float:
        """The q-th percentile (0-100) of the waits, linearly interpolated."""
        ordered = sorted(self.waits) or [0.0]
        rank = (len(ordered) - 1) * q / 100
        low, high = math.floor(rank), math.ceil(rank)
        return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)

    @property
    def done(self) -> float:
        """When the last request finished."""
        return max(self.finished, default=0.0)

    def spread(self, after_s: float = HOUR) -> tuple[float, int]:
        """Median GPUs in service after `after_s` while requests arrive, and the
        largest distance from it."""
        counts = sorted(s[2] for s in self.samples if after_s <= s[0] <= self.last_arrival)
        if not counts:
            return 0.0, 0
        median = counts[len(counts) // 2]
        return float(median), max(abs(c - median) for c in counts)


class Simulation:
    """One run: the event heap, the queue, the groups and their instances."""

    def __init__(
        self,
        arrivals: Sequence[float],
        gen: Sequence[float],
        groups: Sequence[Group],
        policy: Policy,
    ) -> None:
        self.arrivals, self.gen, self.groups, self.policy = arrivals, gen, groups, policy
        self.events: list[tuple[float, int, str, int]] = []
        self.seq = 0
        self.instances: list[Instance] = []
        self.desired = [g.min_size for g in groups]
        self.waiting: deque[int] = deque()
        self.waits = [0.0] * len(arrivals)
        self.finished = [0.0] * len(arrivals)
        self.where: dict[int, int] = {}
        self.points: list[Point] = []
        self.samples: list[tuple[float, int, int]] = []
        self.cooldown_until = [0.0] * len(groups)
        self.done = self.running = 0
        self.last_t = 0.0
        self._minute_reset()

    # ------------------------------------------------------------ bookkeeping

    def _minute_reset(self) -> None:
        self.work_area = 0.0
        self.waiting_max, self.running_max = len(self.waiting), self.running
        self.service_area = [0.0] * len(self.groups)
        self.service_times: list[float] = []

    def _advance(self, t: float) -> None:
        dt = t - self.last_t
        counted = len(self.waiting) + (self.running if self.policy.count_in_flight else 0)
        self.work_area += counted * dt
        for inst in self.instances:
            if self._in_service(inst, self.last_t):
                self.service_area[inst.group] += dt
        self.last_t = t

    def _in_service(self, inst: Instance, t: float) -> bool:
        if inst.state == "serving":
            return True
        # Without a launch hook the group counts a booting instance as InService.
        return inst.state == "starting" and not self.policy.launch_hook

    def push(self, t: float, what: str, ref: int = -1) -> None:
        heapq.heappush(self.events, (t, self.seq, what, ref))
        self.seq += 1

    # --------------------------------------------------------------- capacity

    def _members(self, group: int, *states: str) -> list[Instance]:
        return [i for i in self.instances if i.group == group and i.state in states]

    def _launch(self, t: float, group: int) -> None:
        spec, pool = self.groups[group], self._members(group, "stopped")
        if pool:
            inst, ready = pool[0], t + self.policy.warm_start_s
        else:
            inst = Instance(group, spec.kind.gpus, created=t)
            self.instances.append(inst)
            ready = t + self.policy.cold_start_s
        inst.start(t, ready)
        self.push(ready, "ready", self.instances.index(inst))

    def _refill(self, t: float, group: int) -> None:
        spec = self.groups[group]
        if spec.warm_pool is None:
            return
        wanted = warm_pool_size(spec.warm_pool, spec.max_size, self.desired[group])
        for _ in range(wanted - len(self._members(group, "stopped", "warming"))):
            inst = Instance(group, spec.kind.gpus, created=t)
            self.instances.append(inst)
            inst.start(t, t + self.policy.cold_start_s, state="warming")
            self.push(inst.ready, "ready", len(self.instances) - 1)

    def scale_to(self, t: float, group: int, capacity: int) -> None:
        """Set the group's desired capacity (within its sizes) and act on it."""
        spec = self.groups[group]
        capacity = max(spec.min_size, min(spec.max_size, capacity))
        change, self.desired[group] = capacity - self.desired[group], capacity
        for _ in range(change):
            self._launch(t, group)
        if change < 0:
            active = self._members(group, "starting", "serving")
            order = sorted(active, key=lambda i: (i.state == "serving", i.busy))
            for inst in order[:-change]:
                inst.state = "leaving"
                self._leave_if_idle(t, inst)
        self._refill(t, group)

    def _leave_if_idle(self, t: float, inst: Instance) -> None:
        if inst.state == "leaving" and inst.busy == 0:
            reuse = self.groups[inst.group].warm_pool is not None
            inst.stop(t, "stopped" if reuse else "gone")

    def _ready(self, t: float, index: int) -> None:
        inst = self.instances[index]
        if inst.state == "warming":
            inst.stop(t, "stopped")
        elif inst.state == "starting" and inst.ready <= t:
            inst.state = "serving"

    # ----------------------------------------------------------------- work

    def dispatch(self, t: float) -> None:
        for index, inst in enumerate(self.instances):
            while self.waiting and inst.state == "serving" and inst.busy < inst.gpus:
                job = self.waiting.popleft()
                self.waits[job] = t - self.arrivals[job]
                inst.busy += 1
                self.running += 1
                self.running_max = max(self.running_max, self.running)
                seconds = self.gen[job] * self.groups[inst.group].kind.speed
                self.finished[job] = t + seconds
                self.where[job] = index
                self.push(t + seconds, "done", job)

    def _done(self, t: float, job: int) -> None:
        inst = self.instances[self.where.pop(job)]
        self.service_times.append(t - self.arrivals[job] - self.waits[job])
        inst.busy -= 1
        self.running -= 1
        self.done += 1
        self._leave_if_idle(t, inst)

    # --------------------------------------------------------------- minutes

    def _close_minute(self, t: float) -> None:
        done_here = self.service_times
        self.points.append(
            Point(
                end=t,
                work=self.work_area / PERIOD_S,
                waiting_max=self.waiting_max,
                running_max=self.running_max,
                in_service=[a / PERIOD_S for a in self.service_area],
                desired=list(self.desired),
                seconds=sum(done_here) / len(done_here) if done_here else None,
            )
        )
        self._minute_reset()

    def _visible(self, t: float) -> list[Point]:
        """The data points CloudWatch has at `t`: enough of the latest for every alarm."""
        cut = len(self.points)
        while cut and self.points[cut - 1].end > t - self.policy.metric_delay_s + 1e-9:
            cut -= 1
        window = max(SCALE_IN_DATAPOINTS, self.policy.idle_minutes)
        return self.points[max(0, cut - window) : cut]

    def evaluate(self, t: float) -> None:
        self._close_minute(t)
        seen = self._visible(t)
        if seen:
            for group in range(len(self.groups)):
                evaluate_group(self, t, group, seen)
        gpus = sum(i.gpus for i in self.instances if i.state == "serving")
        self.samples.append((t, len(self.waiting), gpus))
        # Until the work is done and every group has settled at its MinSize.
        settling = any(d > g.min_size for d, g in zip(self.desired, self.groups, strict=True))
        if (
            self.done < len(self.arrivals)
            or settling
            or any(i.state in ("starting", "leaving", "warming") for i in self.instances)
        ):
            self.push(t + PERIOD_S, "eval")

    def run(self) -> Result:
        for group in range(len(self.groups)):
            spec = self.groups[group]
            for _ in range(spec.min_size):
                inst = Instance(group, spec.kind.gpus, created=0.0)
                self.instances.append(inst)
                inst.start(0.0, 0.0, state="serving")
            if spec.warm_pool is not None:  # prepared long before the trace
                for _ in range(warm_pool_size(spec.warm_pool, spec.max_size, spec.min_size)):
                    self.instances.append(Instance(group, spec.kind.gpus, 0.0, state="stopped"))
        self.push(PERIOD_S, "eval")
        for job, t in enumerate(self.arrivals):
            self.push(t, "arrive", job)
        while self.events:
            t, _, what, ref = heapq.heappop(self.events)
            self._advance(t)
            if what == "arrive":
                self.waiting.append(ref)
            elif what == "done":
                self._done(t, ref)
            elif what == "ready":
                self._ready(t, ref)
            else:
                self.evaluate(t)
            self.dispatch(t)
            # A request a worker takes at once is never seen waiting.
            self.waiting_max = max(self.waiting_max, len(self.waiting))
        return self._result()

    def _result(self) -> Result:
        end = self.last_t
        for inst in self.instances:
            if inst.runs and inst.runs[-1][1] == math.inf:
                inst.runs[-1][1] = end
        last = max(self.arrivals, default=0.0)
        return Result(
            self.waits, self.finished, self.instances, self.groups, end, self.samples, last
        )
