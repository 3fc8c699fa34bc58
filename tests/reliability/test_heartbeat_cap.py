"""The heartbeat near SQS's 12-hour visibility cap, with an injected clock.

SQS refuses to keep one receipt hidden for more than 12 hours in total. A
job that runs that long (stuck, or a very slow GPU) must not make the worker
send extensions SQS would refuse, nor crash it; the heartbeat makes its last
extensions up to the cap and then lets the request go.
"""

from __future__ import annotations

import asyncio
import json

from consumer.delivery.backoff import SQS_MAX_VISIBILITY_S
from consumer.delivery.heartbeat import CAP_MARGIN_S
from tests.chaos.proxy import Recorded, Service
from tests.reliability.harness import rig
from tests.support.aws import Stack
from tests.support.fakes import ShiftedClock
from tests.support.helpers import eventually
from tests.support.helpers import memory as memory_request

VISIBILITY_S = 2
# How far below the cap the jump lands: a few extensions' worth.
HEADROOM_S = 4.0


def extensions(history: list[Recorded]) -> list[Recorded]:
    """The ChangeMessageVisibility calls among `history`."""
    return [
        item
        for item in history
        if item.call.service is Service.SQS and item.call.operation == "ChangeMessageVisibility"
    ]


def seconds(item: Recorded) -> int:
    return int(json.loads(item.body)["VisibilityTimeout"])


async def test_extensions_stop_at_the_twelve_hour_cap(stack: Stack, moto_endpoint: str) -> None:
    clock = ShiftedClock()
    async with rig(stack, moto_endpoint, clock=clock, record=True) as r:
        await r.put_input()
        r.generator.gate.clear()
        await r.send(memory_request("long-1"))
        await eventually(r.generator.started.is_set, what="the job to start generating")
        env = r.worker.env
        assert env is not None
        (job,) = r.worker.jobs
        message = job.message
        await eventually(lambda: len(extensions(r.proxy.history)) >= 2, what="extensions")
        assert {seconds(e) for e in extensions(r.proxy.history)} == {VISIBILITY_S}

        # Jump to shortly before the cap, as if the job had run for almost 12 hours.
        elapsed = clock.monotonic() - message.received_at
        clock.advance(SQS_MAX_VISIBILITY_S - CAP_MARGIN_S - elapsed - HEADROOM_S)
        await eventually(lambda: message not in env.heartbeat, what="the heartbeat to let go")

        # Every extension, measured on the shifted clock when it reached SQS,
        # keeps the receipt's total hidden time within the cap.
        hidden = [
            item.at + clock.offset - message.received_at + seconds(item)
            for item in extensions(r.proxy.history)
        ]
        assert max(hidden) <= SQS_MAX_VISIBILITY_S, hidden
        # ... and the heartbeat did not give up long before it had to.
        assert max(hidden) >= SQS_MAX_VISIBILITY_S - CAP_MARGIN_S - VISIBILITY_S - 1, hidden
        # Let go for good: no further extension of this receipt.
        count = len(extensions(r.proxy.history))
        await asyncio.sleep(3 * env.heartbeat.interval)
        assert len(extensions(r.proxy.history)) == count

        assert not r.task.done()
        assert r.worker.board.health().status_code == 200
        r.generator.gate.set()
        await r.wait_events(1, within=30)
        events = await r.settle(1.0)
        assert {e["status"] for e in events} == {"succeeded"}
        assert {e["job_id"] for e in events} == {"long-1"}
        assert await r.objects() == ["generated/user1/memory_long-1.png"]
