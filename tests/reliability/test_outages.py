"""Outages cost no request: S3, SNS or SQS out during a stream of requests.

Each scenario puts the fault proxy in front of one service at a time, with
the production client retries and retry backoff, and a queue whose
RedrivePolicy is the template's (``maxReceiveCount`` 10). However long the
outage, every request ends succeeded exactly once, drawn once, with no
failed event, an empty DLQ and the worker alive; ``/readyz`` says ``paused``
(naming the service) while the outage is noticed and 200 within 30 s of its
end. The 90 s scenarios run with ``OUTAGE_SOAK=1`` (``make soak`` sets it).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from typing import Any

import pytest

from tests.chaos.proxy import Fault, Rule, Service
from tests.reliability.harness import Rig, rig, rig_settings
from tests.support.aws import Stack, make_stack
from tests.support.fakes import ShiftedClock
from tests.support.helpers import eventually, memory, png

JOBS = 6
# How long after a service answers again the worker must take requests.
RESUME_WITHIN_S = 30.0
soak_only = pytest.mark.skipif(
    os.environ.get("OUTAGE_SOAK") != "1", reason="90 s outages run in the soak (OUTAGE_SOAK=1)"
)


@pytest.fixture
def stack(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """A stack whose queue dead-letters after 10 receives, as the template's."""
    created = make_stack(moto_endpoint, visibility_timeout=30, max_receive_count=10)
    for name, value in created.environment().items():
        monkeypatch.setenv(name, value)
    return created


def production_settings(**overrides: Any) -> Any:
    """The rig's settings with the production retry backoff and visibility."""
    values: dict[str, Any] = {
        "retry_backoff_base_s": 10,
        "retry_backoff_max_s": 900,
        "visibility_timeout_s": 30,
    }
    values.update(overrides)
    return rig_settings(**values)


def readyz(r: Rig) -> tuple[int, dict[str, Any]]:
    """The sidecar's ``/readyz`` answer, as it serves it."""
    board = r.worker.board
    report = board.probe(board.ready)
    return report.status_code, report.body


async def stream(r: Rig, prefix: str, count: int, every_s: float) -> None:
    for n in range(count):
        await r.send(memory(f"{prefix}-{n}"))
        await asyncio.sleep(every_s)


async def outage_during_a_stream(
    r: Rig,
    service: Service,
    outage_s: float,
    *,
    clock: ShiftedClock | None = None,
    clock_advance_s: float = 0.0,
) -> bool:
    """Take `service` out for `outage_s` seconds while requests stream in;
    check every promise; whether the worker was seen paused."""
    await r.put_input()
    sender = asyncio.create_task(stream(r, service.value, JOBS, 1.0))
    await r.wait_events(1, within=60)
    rule = r.proxy.add(Rule(Fault.RESET, service))
    started = time.monotonic()
    paused = False
    steps = max(1, int(outage_s / 0.2))
    while time.monotonic() - started < outage_s:
        code, body = readyz(r)
        if code == 503:
            assert body == {"status": "paused", "state": "paused", "services": [service.value]}
            paused = True
        assert r.worker.board.probe(r.worker.board.live).status_code == 200
        if clock is not None:
            clock.advance(clock_advance_s / steps)
        await asyncio.sleep(0.2)
    r.proxy.remove(rule)
    back = time.monotonic()
    await eventually(lambda: readyz(r)[0] == 200, within=RESUME_WITHIN_S + 5, what="ready")
    assert time.monotonic() - back <= RESUME_WITHIN_S
    await sender
    await r.wait_events(JOBS, within=180)
    events = await r.settle(2.0)
    assert [e["status"] for e in events] == ["succeeded"] * JOBS
    assert Counter(e["job_id"] for e in events) == {f"{service.value}-{n}": 1 for n in range(JOBS)}
    assert len(await r.objects()) == JOBS
    assert len(r.generator.calls) == JOBS  # nothing drawn twice
    assert await r.dead_letters() == []
    assert not r.task.done()
    await eventually(lambda: _empty(r), what="every request deleted")
    return paused


async def _empty(r: Rig) -> bool:
    return await r.queue_counts() == (0, 0)


@pytest.mark.parametrize("service", [Service.S3, Service.SNS, Service.SQS])
async def test_a_5s_outage_costs_no_request(
    stack: Stack, moto_endpoint: str, service: Service
) -> None:
    # The client's own retries may ride a 5 s outage through unnoticed; when
    # they do not, the worker pauses. Either way no request pays for it.
    async with rig(stack, moto_endpoint, settings=production_settings(), attempts=None) as r:
        await outage_during_a_stream(r, service, 5.0)


@soak_only
@pytest.mark.parametrize("service", [Service.S3, Service.SNS, Service.SQS])
async def test_a_90s_outage_pauses_and_costs_no_request(
    stack: Stack, moto_endpoint: str, service: Service
) -> None:
    async with rig(stack, moto_endpoint, settings=production_settings(), attempts=None) as r:
        assert await outage_during_a_stream(r, service, 90.0)


@pytest.mark.parametrize("service", [Service.S3, Service.SNS])
async def test_a_10_minute_outage_on_a_fast_clock_holds_the_drawn_picture(
    stack: Stack, moto_endpoint: str, service: Service
) -> None:
    # The worker's clock runs 10 minutes during 25 real seconds of outage:
    # the held job waits (OUTAGE_HOLD_S is an hour), probes back off to
    # their cap, and nothing is released, redrawn or failed.
    clock = ShiftedClock()
    async with rig(
        stack, moto_endpoint, settings=production_settings(), attempts=None, clock=clock
    ) as r:
        assert await outage_during_a_stream(r, service, 25.0, clock=clock, clock_advance_s=600)
        registry = r.worker.metrics.registry
        outages = registry.get_sample_value("illustrator_outages_total", {"service": service.value})
        assert (outages or 0) >= 1


async def test_a_hold_past_outage_hold_s_releases_at_no_cost(
    stack: Stack, moto_endpoint: str
) -> None:
    clock = ShiftedClock()
    settings = production_settings(outage_hold_s=60)
    async with rig(stack, moto_endpoint, settings=settings, attempts=None, clock=clock) as r:
        await r.put_input()
        rule = r.proxy.add(Rule(Fault.RESET, Service.SNS))
        await r.send(memory("held-1"))
        await eventually(lambda: readyz(r)[0] == 503, within=60, what="the pause")
        clock.advance(61)  # past OUTAGE_HOLD_S: the job lets go of its request
        await eventually(lambda: len(r.generator.calls) == 1, what="the first drawing")
        await asyncio.sleep(1.0)
        r.proxy.remove(rule)
        (event,) = await r.wait_events(1, within=60)
        assert await r.settle(1.0) == [event]
    assert event["status"] == "succeeded"
    assert event["attempts"] == 1  # released, not failed
    assert await r.dead_letters() == []


async def test_five_drains_cost_no_attempt(stack: Stack, moto_endpoint: str) -> None:
    """maxReceiveCount 10, MAX_ATTEMPTS 3: a request released by five drains
    still succeeds, as its first attempt."""
    await asyncio.to_thread(
        stack.client("s3").put_object,
        Bucket=stack.bucket,
        Key="avatars/user1.png",
        Body=png(),
    )
    await asyncio.to_thread(
        stack.client("sqs").send_message,
        QueueUrl=stack.queue_url,
        MessageBody=json.dumps(memory("drained-1")),
    )
    for drain in range(5):
        async with rig(stack, moto_endpoint, settings=production_settings()) as r:
            r.generator.gate.clear()  # the GPU holds the job until the drain
            await eventually(r.generator.started.is_set, within=30, what=f"drain {drain} taken")
            r.worker.request_drain("scale-in", immediate=True)
            assert await asyncio.wait_for(r.task, 30) == 0
        await eventually(lambda: _visible(stack), within=15, what="the request back")
    async with rig(stack, moto_endpoint, settings=production_settings()) as r:
        (event,) = await r.wait_events(1, within=30)
        assert await r.settle(0.5) == [event]
        assert await r.dead_letters() == []
    assert event["status"] == "succeeded"
    assert event["attempts"] == 1


async def test_three_failed_generations_dead_letter_on_the_third(
    stack: Stack, moto_endpoint: str
) -> None:
    settings = production_settings(retry_backoff_base_s=0, retry_backoff_max_s=0)
    async with rig(stack, moto_endpoint, settings=settings) as r:
        r.generator.failures = [RuntimeError("CUDA error: launch failure")] * 3
        await r.put_input()
        await r.send(memory("doomed-1"))
        (event,) = await r.wait_events(1, within=60)
        assert await r.settle(1.0) == [event]
        (dead,) = await r.dead_letters()
    assert event["status"] == "failed"
    assert event["attempts"] == 3
    assert event["error"]["code"] == "generation_failed"
    assert len(r.generator.calls) == 3
    assert json.loads(dead["Body"])["job_id"] == "doomed-1"
    assert "failed_attempts" not in dead["MessageAttributes"]  # a redrive starts afresh


def _visible(stack: Stack) -> bool:
    attributes = stack.client("sqs").get_queue_attributes(
        QueueUrl=stack.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) == 1
