"""Fault injection: S3, SNS and SQS failing under a live worker.

Each test puts the fault proxy between a production-wired worker and moto,
injects one kind of trouble, and checks the contract's promises: nothing is
lost, nothing is generated or written twice, the request ends deleted or
dead-lettered, and the worker stays alive.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.chaos.proxy import Fault, Rule, Service
from tests.reliability.harness import (
    CALL_ATTEMPTS,
    Rig,
    rig,
)
from tests.support.aws import Stack
from tests.support.helpers import eventually
from tests.support.helpers import memory as memory_request

# A minute of real time in all: `make test-outages`, after `make test`.
pytestmark = pytest.mark.outages

OUTPUT = "generated/user1/memory_{}.png"


@pytest.fixture
async def r(stack: Stack, moto_endpoint: str) -> AsyncIterator[Rig]:
    """A rig as production configures it, with user1's input picture in place."""
    async with rig(stack, moto_endpoint) as running:
        await running.put_input()
        yield running


@dataclass(frozen=True)
class RiddenOut:
    """A fault on one kind of call that the job must ride out at no cost.

    `rig` holds the rig's own options; `within` how long the event may take.
    """

    rule: Rule
    rig: dict[str, Any] = field(default_factory=dict)
    within: float = 30.0


RIDDEN_OUT = {
    # S3 was out: the request is released, not failed, and taken again.
    "s3-reads-failing": RiddenOut(Rule(Fault.ERROR, Service.S3, "GetObject", times=CALL_ATTEMPTS)),
    # A timeout is S3's trouble as well: released at no cost.
    "s3-read-hanging": RiddenOut(
        Rule(Fault.DELAY, Service.S3, "GetObject", delay_s=60, times=CALL_ATTEMPTS),
        {"read_timeout": 0.5},
        within=60,
    ),
    # Held through S3's trouble and written once.
    "s3-writes-failing": RiddenOut(Rule(Fault.ERROR, Service.S3, "PutObject", times=CALL_ATTEMPTS)),
    # Production's retry configuration: a short burst of throttling costs a
    # little backoff and nothing else.
    "sns-throttled-briefly": RiddenOut(
        Rule(Fault.THROTTLE, Service.SNS, "Publish", times=3), {"attempts": None}
    ),
    # Throttled for longer than a call's attempts: held until it publishes.
    "sns-throttled-for-long": RiddenOut(
        Rule(Fault.THROTTLE, Service.SNS, "Publish", times=CALL_ATTEMPTS)
    ),
    # The delete failing after the publish: held and deleted at last.
    "sqs-delete-failing": RiddenOut(
        Rule(Fault.ERROR, Service.SQS, "DeleteMessage", times=CALL_ATTEMPTS)
    ),
}


@pytest.mark.parametrize("case", RIDDEN_OUT.values(), ids=RIDDEN_OUT.keys())
async def test_a_fault_on_one_kind_of_call_is_ridden_out_at_no_cost(
    stack: Stack, moto_endpoint: str, case: RiddenOut
) -> None:
    rule = case.rule
    async with rig(stack, moto_endpoint, **case.rig) as r:
        await r.put_input()
        r.proxy.add(dataclasses.replace(rule))
        await r.send(memory_request("ridden-1"))
        (event,) = await r.wait_events(1, within=case.within)
        assert (event["status"], event["reused"], event["attempts"]) == ("succeeded", False, 1)
        await _written_once(r, "ridden-1")
        assert r.proxy.faults(rule.service, rule.operation) == rule.times
        assert await r.settle(0.5) == [event]


async def test_s3_out_for_long_pauses_the_worker_and_fails_nothing(r: Rig) -> None:
    outage = r.proxy.add(Rule(Fault.RESET, Service.S3))
    await r.send(memory_request("read-2"))
    await eventually(lambda: r.worker.state.value == "paused", what="the pause")
    assert r.worker.board.health().body["services"] == ["s3"]
    await asyncio.sleep(2.0)  # probes keep failing: still paused, nothing reported
    assert r.worker.state.value == "paused"
    assert await r.settle(0.5) == []
    assert await r.dead_letters() == []
    r.proxy.remove(outage)
    (event,) = await r.wait_events(1, within=40)
    assert event["status"] == "succeeded"
    assert event["attempts"] == 1
    await _written_once(r, "read-2")
    assert r.worker.board.health().status_code == 200


async def test_a_write_that_succeeded_unseen_is_reused_not_duplicated(r: Rig) -> None:
    # Every write lands but the worker never hears so, until S3 is marked
    # out. (No fixed count: aiohttp itself retries a reset PUT.) The held
    # picture is written again, to the same key.
    lost = r.proxy.add(Rule(Fault.RESET_AFTER, Service.S3, "PutObject"))
    await r.send(memory_request("write-2"))
    registry = r.worker.metrics.registry
    await eventually(
        lambda: registry.get_sample_value("illustrator_outages_total", {"service": "s3"}),
        what="S3 to be marked out",
    )
    r.proxy.remove(lost)
    (event,) = await r.wait_events(1)
    assert await r.settle(0.5) == [event]
    assert event["status"] == "succeeded"
    assert event["attempts"] == 1
    assert await r.objects() == [OUTPUT.format("write-2")]
    assert len(r.generator.calls) == 1


async def test_a_hanging_s3_write_is_kept_hidden_by_the_heartbeat(
    stack: Stack, moto_endpoint: str
) -> None:
    # Visibility 2 s; the write hangs for 4 s but answers within the read timeout,
    # so only the heartbeat keeps the request from a second delivery.
    async with rig(stack, moto_endpoint, read_timeout=10) as r:
        await r.put_input()
        r.proxy.add(Rule(Fault.DELAY, Service.S3, "PutObject", delay_s=4, times=1))
        await r.send(memory_request("hang-2"))
        (event,) = await r.wait_events(1, within=30)
        assert await r.settle(1.0) == [event]
        assert event["status"] == "succeeded"
        assert event["attempts"] == 1
        assert len(r.generator.calls) == 1
        assert r.proxy.calls(Service.SQS, "ChangeMessageVisibility") >= 2


async def test_sns_down_while_reporting_a_bad_request_dead_letters_it_once(
    stack: Stack, moto_endpoint: str
) -> None:
    async with rig(stack, moto_endpoint) as r:
        r.proxy.add(Rule(Fault.ERROR, Service.SNS, "Publish", times=CALL_ATTEMPTS))
        await r.send('{"job_id": "bad-1", "kind": "memory"}')
        (event,) = await r.wait_events(1)
        assert await r.settle(0.5) == [event]
        assert event["status"] == "failed"
        assert event["error"]["code"] == "invalid_request"
        assert event["job_id"] == "bad-1"
        dead = await r.dead_letters()
        assert [json.loads(d["Body"])["job_id"] for d in dead] == ["bad-1"], (
            "one dead letter per failed request, even when its first report failed"
        )


async def test_sqs_receives_failing_pause_the_worker_until_they_recover(r: Rig) -> None:
    await eventually(lambda: r.worker.board.health().status_code == 200, what="ready")
    outage = r.proxy.add(Rule(Fault.ERROR, Service.SQS, "ReceiveMessage"))
    await eventually(
        lambda: r.worker.board.health().body["status"] == "paused",
        what="the health check to report the outage",
    )
    assert r.worker.board.live
    await r.send(memory_request("recv-1"))
    failures = r.proxy.faults(Service.SQS, "ReceiveMessage")
    await eventually(
        lambda: r.proxy.faults(Service.SQS, "ReceiveMessage") > failures,
        what="a receive to fail while the request waits",
    )
    assert not r.task.done()
    r.proxy.remove(outage)
    (event,) = await r.wait_events(1)
    assert event["status"] == "succeeded"
    assert event["attempts"] == 1
    await eventually(lambda: r.worker.board.health().status_code == 200, what="recovery")
    registry = r.worker.metrics.registry
    outages = registry.get_sample_value("illustrator_outages_total", {"service": "sqs"})
    assert (outages or 0) >= 1


async def test_receives_reset_mid_flight_lose_nothing(r: Rig) -> None:
    # The receive takes effect (the messages are hidden) but the answer is lost.
    r.proxy.add(Rule(Fault.RESET_AFTER, Service.SQS, "ReceiveMessage", times=2))
    for n in range(3):
        await r.send(memory_request(f"lost-answer-{n}"))
    await r.wait_events(3, within=90)
    assert sorted(e["job_id"] for e in await r.settle(0.5)) == [
        "lost-answer-0",
        "lost-answer-1",
        "lost-answer-2",
    ]
    assert len(await r.objects()) == 3


async def test_a_stale_receipt_handle_on_delete_is_survived(r: Rig) -> None:
    r.proxy.add(_stale_handle("DeleteMessage"))
    await r.send(memory_request("stale-1"))
    first, second = await r.wait_events(2, within=30)
    assert (first["reused"], second["reused"]) == (False, True)
    await _written_once(r, "stale-1")
    assert r.worker.board.health().status_code == 200


async def test_a_stale_receipt_handle_on_the_heartbeat_does_not_stop_the_job(r: Rig) -> None:
    r.generator.gate.clear()
    stale = r.proxy.add(_stale_handle("ChangeMessageVisibility"))
    await r.send(memory_request("stale-2"))
    await eventually(r.generator.started.is_set, what="the job to start generating")
    await eventually(lambda: stale.hits == 1, what="the heartbeat to meet the stale handle")
    r.generator.gate.set()
    await r.wait_events(1, within=30)
    events = await r.settle(3.0)
    assert {e["status"] for e in events} == {"succeeded"}
    assert await r.objects() == [OUTPUT.format("stale-2")]
    await eventually(lambda: _drained(r), what="the request deleted")
    assert not r.task.done()


async def test_the_queue_deleted_under_the_worker_is_reported_and_survived(
    r: Rig, stack: Stack
) -> None:
    await r.send(memory_request("before-delete"))
    await r.wait_events(1)
    sqs = stack.client("sqs")
    attributes = await asyncio.to_thread(
        sqs.get_queue_attributes, QueueUrl=stack.queue_url, AttributeNames=["All"]
    )
    await asyncio.to_thread(sqs.delete_queue, QueueUrl=stack.queue_url)
    await eventually(
        lambda: r.worker.board.health().body["status"] == "unhealthy",
        what="the health check to report the missing queue",
    )
    assert not r.task.done(), "the worker must not crash; it reports and waits"
    name = stack.queue_url.rsplit("/", 1)[1]
    kept = {
        k: v
        for k, v in attributes["Attributes"].items()
        if k in {"VisibilityTimeout", "RedrivePolicy"}
    }
    await asyncio.to_thread(sqs.create_queue, QueueName=name, Attributes=kept)
    await r.send(memory_request("after-recreate"))
    events = await r.wait_events(2, within=60)
    assert [e["job_id"] for e in events] == ["before-delete", "after-recreate"]
    await eventually(lambda: r.worker.board.health().status_code == 200, what="recovery")


async def test_credentials_failing_and_coming_back(r: Rig) -> None:
    await eventually(lambda: r.worker.board.health().status_code == 200, what="ready")
    # Every service refuses the credentials: an expired role, a rotated key.
    denied = r.proxy.add(Rule(Fault.DENY))
    await eventually(
        lambda: r.worker.board.health().body["status"] == "unhealthy",
        what="the health check to report the refusal",
    )
    await r.send(memory_request("creds-1"))
    await eventually(lambda: denied.hits >= 3, what="more refused calls")
    assert not r.task.done()
    r.proxy.remove(denied)
    (event,) = await r.wait_events(1, within=30)
    assert event["status"] == "succeeded"
    assert await r.objects() == [OUTPUT.format("creds-1")]
    await eventually(lambda: r.worker.board.health().status_code == 200, what="recovery")


async def test_credentials_refused_mid_job_retry_the_job(r: Rig) -> None:
    r.generator.gate.clear()
    await r.send(memory_request("creds-2"))
    await eventually(r.generator.started.is_set, what="the job to start generating")
    # The upload and whatever follows are refused once each, then allowed.
    r.proxy.add(Rule(Fault.DENY, Service.S3, "PutObject", times=1))
    r.generator.gate.set()
    (event,) = await r.wait_events(1)
    assert event["status"] == "succeeded"
    assert event["attempts"] == 2
    assert await r.objects() == [OUTPUT.format("creds-2")]


async def _drained(r: Rig) -> bool:
    return await r.queue_counts() == (0, 0)


async def _written_once(r: Rig, job_id: str) -> None:
    """One generation, one object at the job's key, and the request deleted."""
    assert len(r.generator.calls) == 1
    assert await r.objects() == [OUTPUT.format(job_id)]
    await eventually(lambda: _drained(r), what="the request deleted")


def _stale_handle(operation: str) -> Rule:
    """`operation` refused once, as SQS refuses a receipt handle that is no longer valid."""
    return Rule(
        Fault.ERROR, Service.SQS, operation, status=400, code="ReceiptHandleIsInvalid", times=1
    )
