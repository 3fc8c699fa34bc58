"""Outages: which failures are one, the probe's backoff, the pause, held results."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from botocore.hooks import HierarchicalEmitter

from consumer.classify import is_outage
from consumer.delivery.attempts import copy_attributes, failures
from consumer.delivery.holding import HeldResults, Hold, HoldEnded
from consumer.delivery.outage import (
    NOTICE_ATTEMPTS,
    NOTICE_S,
    PROBE_MAX_S,
    STREAK_GAP_S,
    Outages,
    Service,
    ServiceOut,
)
from consumer.delivery.worker_state import StatusBoard, WorkerState
from consumer.metrics import Metrics
from tests.support.fakes import FakeClock, message


def _client_error(code: str, status: int) -> ClientError:
    response: Any = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "PutObject")


@pytest.mark.parametrize(
    ("error", "outage"),
    [
        (EndpointConnectionError(endpoint_url="http://s3"), True),
        (ReadTimeoutError(endpoint_url="http://s3"), True),
        (TimeoutError(), True),
        (_client_error("InternalError", 500), True),
        (_client_error("ServiceUnavailable", 503), True),
        (_client_error("SlowDown", 503), True),
        (_client_error("Throttling", 400), True),
        (_client_error("AccessDenied", 403), False),
        (_client_error("NoSuchBucket", 404), False),
        (ValueError("a bug"), False),
    ],
)
def test_which_failures_are_outages(error: BaseException, outage: bool) -> None:
    assert is_outage(error) is outage


class Flaky:
    """A probe that fails as in an outage until told the service is back."""

    def __init__(self) -> None:
        self.up = False
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        if not self.up:
            raise EndpointConnectionError(endpoint_url="http://sns")


class RecordingClock(FakeClock):
    def __init__(self) -> None:
        super().__init__()
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await super().sleep(seconds)


class PatientClock(FakeClock):
    """Short sleeps pass at once; a long one (a hold's deadline) never ends."""

    async def sleep(self, seconds: float) -> None:
        if seconds > 100:
            await asyncio.Event().wait()
        await super().sleep(seconds)


async def _until(check: Any, limit: int = 2000) -> None:
    for _ in range(limit):
        if check():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def test_an_outage_is_said_once_probed_with_backoff_and_ended_by_an_answer() -> None:
    clock, metrics, probe = RecordingClock(), Metrics(), Flaky()
    outages = Outages(clock, metrics, {Service.SNS: probe})
    board = StatusBoard(clock, "w")
    board.loaded("m")
    board.loop_started()
    board.paused_by = lambda: outages.out
    error = EndpointConnectionError(endpoint_url="http://sns")
    outages.mark(Service.SNS, error)
    outages.mark(Service.SNS, error)  # the same outage: nothing new
    sample = metrics.registry.get_sample_value
    assert sample("illustrator_outages_total", {"service": "sns"}) == 1
    assert sample("illustrator_service_out", {"service": "sns"}) == 1
    ready, live = board.probe(board.ready), board.probe(board.live)
    assert (ready.status_code, ready.body["status"], ready.body["services"]) == (
        503,
        "paused",
        ["sns"],
    )
    assert live.status_code == 200
    assert board.state is WorkerState.PAUSED
    await _until(lambda: probe.calls >= 8)
    assert clock.sleeps[:4] == [1.0, 2.0, 4.0, 8.0]
    assert max(clock.sleeps) == PROBE_MAX_S <= 30
    probe.up = True
    await asyncio.wait_for(outages.wait_clear(), 5)
    assert outages.out == []
    assert sample("illustrator_service_out", {"service": "sns"}) == 0
    assert board.probe(board.ready).status_code == 200
    outages.close()


class Attempts:
    """A client's event system, and what botocore emits after each attempt."""

    def __init__(self, outages: Outages) -> None:
        self.events = HierarchicalEmitter()
        outages.watch(Service.S3, self.events)

    def __call__(self, status: int = 0, code: str = "") -> None:
        """One attempt: answered with `status` (and error `code`), or not at all."""
        failed = EndpointConnectionError(endpoint_url="http://s3") if not status else None
        self.events.emit(
            "response-received.s3.PutObject",
            exception=failed,
            response_dict={"status_code": status} if status else None,
            parsed_response={"Error": {"Code": code}} if code else {},
            context={},
        )


async def test_attempts_unanswered_for_notice_s_mark_the_service_out_before_retries_end() -> None:
    clock = FakeClock()
    outages = Outages(clock, Metrics(), {Service.S3: Flaky()})
    attempt = Attempts(outages)
    attempt()
    clock.advance(NOTICE_S / 2)
    attempt(404, "NoSuchKey")  # an answer, even a refusal: the service is there
    clock.advance(NOTICE_S / 2)
    attempt()
    clock.advance(NOTICE_S / 2)
    attempt(503, "SlowDown")
    clock.advance(STREAK_GAP_S + 1)
    attempt()  # failures this far apart are not one streak
    assert outages.out == []
    clock.advance(NOTICE_S)
    attempt()  # no answer for NOTICE_S: out, while the call still retries
    assert outages.out == ["s3"]
    outages.close()
    assert attempt.events.emit("response-received.s3.PutObject") == []  # no longer followed


async def test_notice_attempts_failed_in_a_row_mark_the_service_out_at_once() -> None:
    clock = FakeClock()
    outages = Outages(clock, Metrics(), {Service.S3: Flaky()})
    attempt = Attempts(outages)
    for _ in range(NOTICE_ATTEMPTS - 1):
        attempt()
        clock.advance(0.01)
    attempt(200)
    for _ in range(NOTICE_ATTEMPTS - 1):
        attempt()
        clock.advance(0.01)
    assert outages.out == []
    attempt(500, "InternalError")
    assert outages.out == ["s3"]
    outages.close()


async def test_a_refusal_is_an_answer() -> None:
    async def refused() -> None:
        raise _client_error("AccessDenied", 403)

    outages = Outages(FakeClock(), Metrics(), {Service.S3: refused})
    outages.mark(Service.S3, TimeoutError())
    await asyncio.wait_for(outages.wait_clear(), 5)


async def test_guard_marks_outages_and_lets_other_errors_through() -> None:
    outages = Outages(FakeClock(), Metrics(), {Service.S3: Flaky()})
    with pytest.raises(ValueError, match="bug"), outages.guard(Service.S3):
        raise ValueError("bug")
    assert outages.out == []
    with pytest.raises(ServiceOut), outages.guard(Service.S3):
        raise _client_error("InternalError", 500)
    assert outages.out == ["s3"]
    outages.close()


async def test_a_hold_waits_for_the_service_and_calls_again() -> None:
    clock, probe = PatientClock(), Flaky()
    outages = Outages(clock, Metrics(), {Service.SNS: probe})
    store = HeldResults(max_count=4, max_bytes=1000)
    hold = Hold(outages, store, clock, hold_s=3600, size=300)
    calls: list[int] = []

    async def publish() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise EndpointConnectionError(endpoint_url="http://sns")
        return "published"

    task = asyncio.create_task(hold.call(Service.SNS, publish))
    await _until(lambda: probe.calls >= 3)
    assert (len(calls), store.count, store.bytes) == (1, 1, 300)
    probe.up = True
    assert await asyncio.wait_for(task, 5) == "published"
    hold.end()
    assert (store.count, store.bytes) == (0, 0)


async def test_a_hold_ends_at_outage_hold_s_and_at_the_bound() -> None:
    clock = FakeClock()
    outages = Outages(clock, Metrics(), {Service.S3: Flaky()})

    async def upload() -> None:
        raise EndpointConnectionError(endpoint_url="http://s3")

    timed = Hold(outages, HeldResults(4, 1000), clock, hold_s=60)
    with pytest.raises(HoldEnded, match="OUTAGE_HOLD_S"):
        await asyncio.wait_for(timed.call(Service.S3, upload), 5)
    assert clock.monotonic() >= 1060
    full = Hold(outages, HeldResults(4, 1000), clock, hold_s=60, size=1001)
    with pytest.raises(HoldEnded, match="bound"):
        await full.call(Service.S3, upload)
    outages.close()


def test_the_count_travels_in_the_message_within_the_attribute_limit() -> None:
    fresh = message()
    assert failures(fresh) == 0
    many = {f"a{n}": {"DataType": "String", "StringValue": str(n)} for n in range(10)}
    counted = dataclasses.replace(message(), message_attributes=many)
    kept = copy_attributes(counted, 2)
    assert len(kept) == 10
    assert kept["failed_attempts"] == {"DataType": "Number", "StringValue": "2"}
    again = dataclasses.replace(message(), message_attributes=dict(kept))
    assert failures(again) == 2
    bogus = dataclasses.replace(
        message(),
        message_attributes={"failed_attempts": {"DataType": "Number", "StringValue": "x"}},
    )
    assert failures(bogus) == 0
