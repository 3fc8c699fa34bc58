"""The chaos soak: many jobs, killed consumers, failing AWS calls; then an audit.

``make soak`` (``python -m tests.chaos.soak``) runs 1000 jobs through three
``illustrator run`` processes (builtin:blank) that reach moto's server through
the fault proxy, which fails a share of S3, SNS and SQS calls (5xx,
throttling, resets before and after the call took effect, delays). Every few
seconds a random consumer is killed with SIGKILL and started again. When every
job has been reported and the queue is empty, the faults stop, the consumers
are drained, and the audit reads the bucket, the completion events (an
observer queue subscribed to the topic) and the dead-letter queue:

* a job that should succeed has exactly one output object and at least one
  success event, and no failure event or dead letter;
* a job that should fail has its error code in at least one failure event
  and in a dead letter, and no output object;
* a poison job (its prompt holds :data:`~tests.chaos.poisoned.POISON`: the
  consumers run ``python -m tests.chaos.poisoned run``, whose generator a
  poison request breaks, so each worker that takes one exits 1) ends as
  ``crashed_worker`` with its event and dead letter, every failed event of
  it naming exactly ``MAX_WORKER_DEATHS`` deaths. The workers it broke are
  counted from their logs: exactly that many, but for two effects of the
  chaos itself: a dying worker killed before its report leaves a death its
  receive count does not yet prove, and one killed between sending the copy
  that records a death and deleting the request leaves a duplicate, which
  is charged on its own (at-least-once delivery);
* a good job may end ``crashed_worker`` only when its workers were seen to
  vanish with it (its deaths recorded from the receive count, in the
  workers' logs) and it broke none itself: with a SIGKILL every few seconds
  a request can be in flight when two workers die, which the contract
  charges it with; such jobs are counted apart;
* lost (a job never reported) and duplicate objects must be 0.

Besides the random faults, each service is taken out whole, in turn, for
``--outage`` seconds (every call reset; S3 first, 10 s into the run, then SNS
and SQS, ``--outage`` apart): the consumers must pause and ride it out.

Duplicate events and dead letters are counted too: at-least-once delivery
allows them when a consumer dies between its report and its delete (a
SIGKILL there, or a publish whose answer the proxy threw away); subscribers
deduplicate by ``job_id``. The run is bounded by ``--duration`` and stops by
itself; the exit status is 0 when the audit passes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from tests.chaos.audit import (
    PlannedJob,
    Report,
    audit,
    audit_poison,
    died_of_poison,
    fatal_jobs,
    silent_deaths_of,
)
from tests.chaos.poisoned import POISON
from tests.chaos.process import ConsumerProcess, consumer_environment
from tests.chaos.proxy import Fault, FaultProxy, ProxyThread, Rule, Service
from tests.support.aws import FAKE_CREDENTIALS, Stack, make_stack
from tests.support.helpers import png

USERS = 20
SIDE = 64
ROOT = Path(__file__).resolve().parents[2]
# Kills and lost answers each count as a receive; SQS must not dead-letter a
# request by itself (without a failure event) before the consumer has tried.
MAX_RECEIVES = 20


@dataclass(frozen=True)
class SoakConfig:
    """How big and how hostile the soak is."""

    jobs: int = 1000
    consumers: int = 3
    duration_s: float = 900.0
    kill_every_s: float = 4.0
    fault_rate: float = 0.04
    visibility_s: int = 5
    latency_ms: int = 20
    bad_share: float = 0.04
    missing_share: float = 0.04
    resend_share: float = 0.02
    poison: int = 5
    backlog: int = 100
    seed: int = 1
    outage_s: float = 20.0
    workdir: Path | None = None


def plan_jobs(config: SoakConfig, rng: random.Random) -> list[PlannedJob]:
    """Mostly good jobs; some without an input, some invalid, a few poison."""
    poison = set(rng.sample(range(config.jobs), min(config.poison, config.jobs)))
    jobs = []
    for n in range(config.jobs):
        kind = rng.choice(["memory", "subject"])
        job_id = f"soak-{n:05d}"
        user_id = f"user{rng.randrange(USERS)}"
        body: dict[str, Any] = {
            "job_id": job_id,
            "kind": kind,
            "user_id": user_id,
            "num_inference_steps": 1,
            "width": SIDE,
            "height": SIDE,
        }
        if kind == "memory":
            body["prompt"] = f"memory number {n}"
        expect = "succeeded"
        roll = rng.random()
        if n in poison:
            body["kind"] = kind = "memory"
            body["prompt"] = f"{POISON} number {n}"
            expect = "crashed_worker"
        elif roll < config.bad_share:
            body["width"] = 100  # not a multiple of 64
            expect = "invalid_request"
        elif roll < config.bad_share + config.missing_share:
            body["user_id"] = user_id = f"nobody{n}"
            expect = "input_not_found"
        jobs.append(PlannedJob(job_id, user_id, kind, json.dumps(body), expect))
    return jobs


class Trouble(NamedTuple):
    """One service's faults, each as a share of the soak's fault rate."""

    faults: dict[Fault, float]  # on any of its calls
    lost_answers: dict[str, float]  # calls whose answer is lost after they took effect
    delayed: float = 0.0  # calls answered DELAY_S late


TROUBLE = {
    Service.S3: Trouble(
        {Fault.ERROR: 1, Fault.THROTTLE: 0.5, Fault.RESET: 0.5}, {"PutObject": 1}, delayed=0.5
    ),
    Service.SNS: Trouble(
        {Fault.THROTTLE: 1, Fault.ERROR: 0.5, Fault.RESET: 0.5}, {"Publish": 0.25}
    ),
    Service.SQS: Trouble(
        {Fault.ERROR: 0.5, Fault.THROTTLE: 0.5, Fault.RESET: 0.5},
        {"DeleteMessage": 1, "ReceiveMessage": 0.25},
        delayed=0.5,
    ),
}
DELAY_S = 0.3


def fault_rules(rate: float) -> list[Rule]:
    """Each service's share of trouble; `rate` is the share of one kind of fault."""
    rules = []
    for service, (faults, lost_answers, delayed) in TROUBLE.items():
        rules += [Rule(fault, service, rate=rate * share) for fault, share in faults.items()]
        rules += [
            Rule(Fault.RESET_AFTER, service, operation, rate=rate * share)
            for operation, share in lost_answers.items()
        ]
        if delayed:
            rules.append(Rule(Fault.DELAY, service, rate=rate * delayed, delay_s=DELAY_S))
    return rules


def _upload_inputs(stack: Stack) -> None:
    s3 = stack.client("s3")
    picture = png(32, 32, (120, 80, 40))
    for n in range(USERS):
        for prefix in ("avatars/", "subjects/"):
            s3.put_object(Bucket=stack.bucket, Key=f"{prefix}user{n}.png", Body=picture)


class Feeder:
    """Sends the requests in waves, keeping at most `backlog` unfinished.

    A steady flow rather than one heap: moto's queue operations slow down
    with the number of messages queued, and a producer feeds work over time.
    Some requests are sent twice, as a producer retrying a send would.
    """

    def __init__(
        self, stack: Stack, jobs: Sequence[PlannedJob], rng: random.Random, config: SoakConfig
    ) -> None:
        self.stack = stack
        self.backlog = config.backlog
        self.bodies = [job.body for job in jobs]
        self.bodies += [
            job.body
            for job in jobs
            if job.expect == "succeeded" and rng.random() < config.resend_share
        ]
        rng.shuffle(self.bodies)
        self.sent = 0

    @property
    def done(self) -> bool:
        """Whether every request has been sent."""
        return self.sent == len(self.bodies)

    def feed(self, finished: int) -> None:
        """Top the queue up, given how many sent requests have finished."""
        sqs = self.stack.client("sqs")
        while not self.done and self.sent - finished < self.backlog:
            batch = self.bodies[self.sent : self.sent + 10]
            entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(batch)]
            response = sqs.send_message_batch(QueueUrl=self.stack.queue_url, Entries=entries)
            if response.get("Failed"):
                raise RuntimeError(f"could not submit: {response['Failed']}")
            self.sent += len(batch)


def _receive_all(stack: Stack, url: str) -> Iterator[dict[str, Any]]:
    sqs = stack.client("sqs")
    while True:
        messages = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages", [])
        if not messages:
            return
        yield from messages
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ],
        )


def _queue_empty(stack: Stack) -> bool:
    attributes = stack.client("sqs").get_queue_attributes(
        QueueUrl=stack.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return all(int(value) == 0 for value in attributes.values())


def _outputs(stack: Stack) -> list[str]:
    paginator = stack.client("s3").get_paginator("list_objects_v2")
    return [
        item["Key"]
        for page in paginator.paginate(Bucket=stack.bucket, Prefix="generated/")
        for item in page.get("Contents", [])
    ]


class Outages:
    """Each service out whole in turn: every call to it reset, for `outage_s`."""

    def __init__(self, proxy: FaultProxy, outage_s: float, report: Report) -> None:
        self.proxy = proxy
        self.report = report
        first = time.monotonic() + 10.0
        services = (Service.S3, Service.SNS, Service.SQS) if outage_s > 0 else ()
        self.plan = [
            (first + 2 * n * outage_s, first + (2 * n + 1) * outage_s, service)
            for n, service in enumerate(services)
        ]
        self.active: Rule | None = None

    @property
    def over(self) -> bool:
        """Whether every planned outage has ended."""
        return not self.plan and self.active is None

    def step(self, now: float) -> None:
        """Start or end the outage due at `now`."""
        if self.active is not None and now >= self.plan[0][1]:
            self.proxy.remove(self.active)
            self.active = None
            self.plan.pop(0)
        elif self.active is None and self.plan and now >= self.plan[0][0]:
            start, end, service = self.plan[0]
            self.active = self.proxy.add(Rule(Fault.RESET, service))
            self.report.outages.append(f"{service.value} {end - start:.0f} s")


class Soak:
    """One soak run against moto's server at `endpoint`."""

    def __init__(self, config: SoakConfig, endpoint: str, workdir: Path) -> None:
        self.config = config
        self.endpoint = endpoint
        self.workdir = workdir
        self.rng = random.Random(config.seed)
        self.report = Report(jobs=config.jobs, consumers=config.consumers)
        self.events: list[dict[str, Any]] = []
        self.poison: set[str] = set()
        self.logs: list[str] = []

    def run(self) -> Report:
        """Run, audit, and return the figures."""
        started = time.monotonic()
        config = self.config
        stack = make_stack(
            self.endpoint, visibility_timeout=config.visibility_s, max_receive_count=MAX_RECEIVES
        )
        jobs = plan_jobs(config, self.rng)
        self.poison = {job.job_id for job in jobs if job.expect == "crashed_worker"}
        _upload_inputs(stack)
        feeder = Feeder(stack, jobs, self.rng, config)
        self.report.messages = len(feeder.bodies)
        feeder.feed(0)
        self._phase("submit", started)
        proxy = FaultProxy(self.endpoint, fault_rules(config.fault_rate), seed=config.seed)
        with self._serving(proxy) as url:
            consumers = self._consumers(stack, url)
            try:
                for consumer in consumers:
                    consumer.start()
                outages = Outages(proxy, config.outage_s, self.report)
                self._chaos(stack, jobs, feeder, consumers, started + config.duration_s, outages)
                self._phase("chaos", started)
                proxy.clear()
                self._quiesce(stack, consumers, started + config.duration_s)
                self._phase("quiesce", started)
            finally:
                self._stop(consumers)
                self.logs = [died_of_poison(consumer) for consumer in consumers]
                all_logs = "".join(c.logs() for c in consumers)
                broken = Counter(fatal_jobs(all_logs))
                self._phase("stop", started)
            self.report.calls = proxy.calls()
            for (service, _, outcome), n in proxy.counts.items():
                if outcome != "forwarded":
                    self.report.faults[f"{service}.{outcome}"] += n
        self.events += [json.loads(m["Body"]) for m in _receive_all(stack, stack.observer_url)]
        dead = list(_receive_all(stack, stack.dlq_url))
        vanished = frozenset(silent_deaths_of(all_logs)) - set(broken)
        audit(self.report, jobs, self.events, dead, _outputs(stack), vanished)
        audit_poison(self.report, jobs, self.events, Counter(fatal_jobs("".join(self.logs))))
        self.report.poison_broken = {job_id: broken[job_id] for job_id in sorted(self.poison)}
        self._phase("audit", started)
        self.report.elapsed_s = time.monotonic() - started
        return self.report

    def _phase(self, name: str, started: float) -> None:
        """Record how long the phase `name` took, up to now."""
        self.report.phases[name] = time.monotonic() - started - sum(self.report.phases.values())

    @contextmanager
    def _serving(self, proxy: FaultProxy) -> Iterator[str]:
        runner = ProxyThread(proxy)
        url = runner.start()
        try:
            yield url
        finally:
            runner.stop()

    def _consumers(self, stack: Stack, url: str) -> list[ConsumerProcess]:
        config = self.config
        consumers = []
        for n in range(config.consumers):
            env = consumer_environment(
                {**stack.environment(), "AWS_ENDPOINT_URL": url},
                MODEL_PATH="builtin:blank",
                BLANK_LATENCY_MS=str(config.latency_ms),
                VISIBILITY_TIMEOUT_S=str(config.visibility_s),
                RETRY_BACKOFF_BASE_S="0.5",
                RETRY_BACKOFF_MAX_S="2",
                DRAIN_TIMEOUT_S="10",
                HEALTH_HOST="127.0.0.1",
                HEALTH_PORT="0",
                LOG_LEVEL="info",
                WORKER_ID=f"soak-{n}",
            )
            # The consumer with a generator that poison jobs break; test code only.
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
            consumers.append(
                ConsumerProcess(f"consumer{n}", env, self.workdir, module="tests.chaos.poisoned")
            )
        return consumers

    def _collect(self, stack: Stack) -> None:
        sqs = stack.client("sqs")
        messages = sqs.receive_message(QueueUrl=stack.observer_url, MaxNumberOfMessages=10).get(
            "Messages", []
        )
        if messages:
            self.events += [json.loads(m["Body"]) for m in messages]
            sqs.delete_message_batch(
                QueueUrl=stack.observer_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                ],
            )

    def _reported(self, jobs: Sequence[PlannedJob]) -> int:
        seen = {e.get("job_id") for e in self.events}
        return sum(job.job_id in seen for job in jobs)

    def _finished_messages(self) -> int:
        return len({e["sqs_message_id"] for e in self.events})

    def _watch(self, consumers: Sequence[ConsumerProcess]) -> None:
        """Restart any consumer that died without being killed, and note it
        (a worker a poison job took down is expected: exit 1, its log says so)."""
        for consumer in consumers:
            status = consumer.ended()
            if status is not None:
                log = consumer.log_path.read_text(errors="replace")
                if status != 1 or not set(fatal_jobs(log)) & self.poison:
                    self.report.crashes.append(
                        f"{consumer.name}#{consumer.incarnation} exited {status}: " + log[-500:]
                    )
                consumer.start()

    def _chaos(
        self,
        stack: Stack,
        jobs: Sequence[PlannedJob],
        feeder: Feeder,
        consumers: Sequence[ConsumerProcess],
        deadline: float,
        outages: Outages,
    ) -> None:
        every = self.config.kill_every_s
        next_kill = time.monotonic() + every * self.rng.uniform(0.5, 1.5)
        next_check = 0.0
        while True:
            now = time.monotonic()
            if now > deadline:
                self.report.timed_out = True
                return
            outages.step(now)
            self._watch(consumers)
            self._collect(stack)
            feeder.feed(self._finished_messages())
            if now >= next_kill:
                victim = self.rng.choice(list(consumers))
                victim.kill()
                self.report.kills += 1
                victim.start()
                next_kill = now + every * self.rng.uniform(0.5, 1.5)
            if now >= next_check:
                next_check = now + 1.0
                finished = feeder.done and self._reported(jobs) == len(jobs)
                if finished and outages.over and _queue_empty(stack):
                    return
            # The audit's own calls share moto with the consumers; poll gently.
            time.sleep(0.1)

    def _quiesce(self, stack: Stack, consumers: Sequence[ConsumerProcess], deadline: float) -> None:
        """Without faults or kills, wait until the queue stays empty for a while.

        Requests a killed consumer held come back after their visibility
        timeout and are then reported again (reused); wait them out.
        """
        quiet_for = self.config.visibility_s + 2.0
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < quiet_for:
            if time.monotonic() > deadline:
                self.report.timed_out = True
                return
            self._watch(consumers)
            self._collect(stack)
            if not _queue_empty(stack):
                quiet_since = time.monotonic()
            time.sleep(0.2)

    def _stop(self, consumers: Sequence[ConsumerProcess]) -> None:
        for consumer in consumers:
            if consumer.alive:
                self.report.final_exits.append(consumer.terminate())


@contextmanager
def moto_process(workdir: Path) -> Iterator[str]:
    """moto's server as a child process on a free loopback port; its URL.

    A process of its own, so that moto does not share an interpreter lock
    with the proxy and the audit: the consumers' calls are then not slowed
    by the soak's own bookkeeping.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (workdir / "moto.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **FAKE_CREDENTIALS},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto's server did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        server.terminate()
        server.wait(10)
        log.close()


def run_soak(config: SoakConfig, endpoint: str) -> Report:
    """Run one soak against moto's server at `endpoint`; the audit's figures."""
    if config.workdir is not None:
        return Soak(config, endpoint, config.workdir).run()
    with tempfile.TemporaryDirectory(prefix="soak-") as workdir:
        return Soak(config, endpoint, Path(workdir)).run()


def _parser() -> argparse.ArgumentParser:
    defaults = SoakConfig()
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.soak", description=__doc__)
    parser.add_argument("--jobs", type=int, default=defaults.jobs)
    parser.add_argument("--consumers", type=int, default=defaults.consumers)
    parser.add_argument(
        "--duration",
        type=float,
        default=defaults.duration_s,
        help="upper bound in seconds; the soak stops as soon as every job is reported",
    )
    parser.add_argument("--kill-every", type=float, default=defaults.kill_every_s)
    parser.add_argument(
        "--fault-rate", type=float, default=defaults.fault_rate, help="share per kind of fault"
    )
    parser.add_argument("--latency-ms", type=int, default=defaults.latency_ms)
    parser.add_argument(
        "--backlog", type=int, default=defaults.backlog, help="unfinished requests queued at most"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--poison", type=int, default=defaults.poison, help="jobs that kill every worker"
    )
    parser.add_argument(
        "--outage", type=float, default=defaults.outage_s, help="seconds each service is out"
    )
    parser.add_argument("--workdir", type=Path, help="keep the consumers' logs here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak on a private moto server; 0 when the audit passes."""
    args = _parser().parse_args(argv)
    config = SoakConfig(
        jobs=args.jobs,
        consumers=args.consumers,
        duration_s=args.duration,
        kill_every_s=args.kill_every,
        fault_rate=args.fault_rate,
        latency_ms=args.latency_ms,
        backlog=args.backlog,
        seed=args.seed,
        poison=args.poison,
        outage_s=args.outage,
        workdir=args.workdir,
    )
    # Only ever the private moto server: fake credentials, no profile.
    os.environ.update(FAKE_CREDENTIALS)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        os.environ.pop(name, None)
    with (
        tempfile.TemporaryDirectory(prefix="soak-moto-") as scratch,
        moto_process(args.workdir or Path(scratch)) as endpoint,
    ):
        report = run_soak(config, endpoint)
    for line in report.lines():
        print(line)
    for name, problems in (
        ("lost", report.lost),
        ("inconsistent", report.inconsistent),
        ("unexpected", report.unexpected),
        ("stray objects", report.stray_objects),
        ("unexpected exits", report.crashes),
        ("poison", report.poison_problems),
    ):
        for problem in problems[:20]:
            print(f"  {name}: {problem}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
