"""The heartbeat's schedule, its 12-hour cap and its failures, on a fake clock."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from structlog.testing import capture_logs

from consumer.aws.request_queue import RequestQueue
from consumer.delivery.heartbeat import CAP_MARGIN_S, RECEIVE_HOLD_S, Heartbeat
from tests.support.fakes import FakeClock, FakeQueue, message
from tests.support.helpers import eventually


def _heartbeat(visibility_s: int = 60, **kwargs: Any) -> tuple[Heartbeat, FakeQueue, FakeClock]:
    queue, clock = FakeQueue(), FakeClock()
    return Heartbeat(cast(RequestQueue, queue), visibility_s, clock, **kwargs), queue, clock


async def test_received_with_a_short_hold_then_extended_when_half_is_gone() -> None:
    heartbeat, queue, clock = _heartbeat(600)
    assert heartbeat.receive_hold_s == RECEIVE_HOLD_S
    heartbeat.track(message("a", received_at=clock.monotonic()))
    await heartbeat.beat()
    # A job shorter than half the receive hold costs no extension at all.
    assert queue.changes == []
    clock.advance(RECEIVE_HOLD_S / 2)
    await heartbeat.beat()
    assert queue.changes == [("a", 600)]
    # The beat looks often enough to catch the half-way point of the hold.
    assert heartbeat.interval <= RECEIVE_HOLD_S / 4
    # A queue whose timeout is shorter than the hold is received with its timeout.
    assert _heartbeat(4)[0].receive_hold_s == 4


async def test_extends_by_the_visibility_timeout_when_half_is_left() -> None:
    heartbeat, queue, clock = _heartbeat(60)
    heartbeat.track(message("a", received_at=clock.monotonic()))
    clock.advance(RECEIVE_HOLD_S / 2)
    await heartbeat.beat()
    assert queue.changes == [("a", 60)]
    clock.advance(29)
    await heartbeat.beat()
    assert len(queue.changes) == 1
    clock.advance(1)
    await heartbeat.beat()
    assert queue.changes == [("a", 60), ("a", 60)]
    clock.advance(29)
    await heartbeat.beat()
    assert len(queue.changes) == 2
    clock.advance(1)
    await heartbeat.beat()
    assert len(queue.changes) == 3


async def test_every_tracked_message_is_kept_and_released_ones_are_not() -> None:
    heartbeat, queue, clock = _heartbeat(10)
    prefetched, running = message("pre", clock.monotonic()), message("run", clock.monotonic())
    heartbeat.track(prefetched)
    heartbeat.track(running)
    clock.advance(6)
    await heartbeat.beat()
    assert sorted(queue.changes) == [("pre", 10), ("run", 10)]
    await heartbeat.release(prefetched)
    assert prefetched not in heartbeat
    clock.advance(6)
    await heartbeat.beat()
    assert queue.changes[-1] == ("run", 10)
    assert len(queue.changes) == 3


async def test_gives_up_cleanly_near_the_twelve_hour_cap() -> None:
    heartbeat, queue, clock = _heartbeat(600)
    received = clock.monotonic()
    heartbeat.track(message("long", received))
    hidden_until = []
    with capture_logs() as logs:
        while len(heartbeat) and clock.monotonic() - received < 50_000:
            before = len(queue.changes)
            await heartbeat.beat()
            if len(queue.changes) > before:
                hidden_until.append(clock.monotonic() + queue.changes[-1][1] - received)
            clock.advance(300)
    assert len(heartbeat) == 0
    assert [e["event"] for e in logs].count("heartbeat_gave_up") == 1
    # Hidden almost to the cap, never asking SQS for more than 12 hours from receipt.
    assert 43_200 - 600 - CAP_MARGIN_S < max(hidden_until) <= 43_200 - CAP_MARGIN_S
    assert queue.changes[-1][1] < 600  # the last extension stops short at the cap


async def _a_failed_extension(code: str) -> tuple[Heartbeat, FakeQueue, FakeClock, list[Any]]:
    """One message due for an extension that SQS refuses with `code`; the beat's logs."""
    heartbeat, queue, clock = _heartbeat(10)
    heartbeat.track(message("m", clock.monotonic()))
    queue.fail_with = code
    clock.advance(6)
    with capture_logs() as logs:
        await heartbeat.beat()
    return heartbeat, queue, clock, logs


async def test_a_lost_receipt_handle_stops_the_extensions() -> None:
    heartbeat, _, _, logs = await _a_failed_extension("ReceiptHandleIsInvalid")
    assert len(heartbeat) == 0
    assert logs[0]["event"] == "heartbeat_gave_up"


async def test_a_transient_failure_is_tried_again_at_the_next_beat() -> None:
    heartbeat, queue, clock, logs = await _a_failed_extension("ThrottlingException")
    assert logs[0]["event"] == "heartbeat_extension_failed"
    assert len(heartbeat) == 1
    queue.fail_with = None
    clock.advance(heartbeat.interval)
    await heartbeat.beat()
    assert queue.changes == [("m", 10)]


async def test_release_waits_for_an_extension_in_flight() -> None:
    heartbeat, queue, clock = _heartbeat(10)
    held = message("m", clock.monotonic())
    heartbeat.track(held)
    queue.hold = asyncio.Event()
    clock.advance(6)
    beat = asyncio.create_task(heartbeat.beat())
    await asyncio.sleep(0)
    release = asyncio.create_task(heartbeat.release(held))
    await asyncio.sleep(0.01)
    assert not release.done()  # a late extension must not undo what follows the release
    queue.hold.set()
    await asyncio.gather(beat, release)
    assert queue.changes == [("m", 10)]


async def test_run_beats_on_the_injected_clock() -> None:
    heartbeat, queue, clock = _heartbeat(8)
    heartbeat.track(message("m", clock.monotonic()))
    task = asyncio.create_task(heartbeat.run())
    await eventually(lambda: len(queue.changes) >= 3, what="three beats")
    task.cancel()
    assert {seconds for _, seconds in queue.changes} == {8}
    assert heartbeat.interval == 2.0
