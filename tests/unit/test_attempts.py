"""The counts a request carries: attempts and worker deaths, on every copy sent."""

from __future__ import annotations

import dataclasses
from typing import Any

from botocore.exceptions import EndpointConnectionError

from consumer.aws.request_queue import ReceivedMessage
from consumer.delivery import attempts
from consumer.delivery.heartbeat import Heartbeat
from tests.support.fakes import FakeClock, FakeQueue, message


def _with(received: ReceivedMessage, **strings: str) -> ReceivedMessage:
    attributes = {k: {"DataType": "String", "StringValue": v} for k, v in strings.items()}
    return dataclasses.replace(received, message_attributes=attributes)


def _value(attributes: dict[str, Any], name: str) -> str | None:
    return attributes[name]["StringValue"] if name in attributes else None


def test_deaths_add_the_reported_and_the_silent() -> None:
    assert attempts.deaths(message()) == 0
    assert attempts.deaths(_with(message(), worker_deaths="1")) == 1
    assert attempts.deaths(_with(message(ApproximateReceiveCount=4), worker_deaths="1")) == 2
    assert attempts.deaths(_with(message(), worker_deaths="many")) == 0


def test_a_copy_carries_both_counts_and_keeps_the_producer_s_attributes() -> None:
    received = _with(message(), signature="abc", trace="t", worker_deaths="1", failed_attempts="2")
    copied = attempts.copy_attributes(received, failed=2, died=1)
    assert _value(copied, "failed_attempts") == "2"
    assert _value(copied, "worker_deaths") == "1"
    assert (_value(copied, "signature"), _value(copied, "trace")) == ("abc", "t")
    # No deaths, no attribute: a producer's attribute is not crowded out for nothing.
    assert "worker_deaths" not in attempts.copy_attributes(received, failed=0, died=0)


def test_a_copy_stays_within_sqs_s_ten_attributes() -> None:
    many = {f"a{n}": "x" for n in range(9)}
    received = _with(message(), signature="abc", **many)
    copied = attempts.copy_attributes(received, failed=1, died=1)
    assert len(copied) == 10
    assert {"signature", "failed_attempts", "worker_deaths"} <= set(copied)


class CopyQueue(FakeQueue):
    """A queue whose copies fail `failures` times (SQS out), then go through."""

    url = "http://queue"

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.copies: list[dict[str, Any]] = []
        self.deleted: list[str] = []

    async def send_copy(
        self, received: ReceivedMessage, url: str, attributes: Any, delay_s: int = 0
    ) -> None:
        if self.failures:
            self.failures -= 1
            raise EndpointConnectionError(endpoint_url=url)
        self.copies.append(dict(attributes))

    async def delete(self, received: ReceivedMessage) -> None:
        self.deleted.append(received.message_id)


async def test_a_dying_worker_keeps_trying_to_record_the_death() -> None:
    queue = CopyQueue(failures=2)
    heartbeat = Heartbeat(queue, 30, FakeClock())  # type: ignore[arg-type]
    received = message(ApproximateReceiveCount=1)
    heartbeat.track(received)
    await attempts.hand_on(heartbeat, queue, received, died=1, within_s=10)  # type: ignore[arg-type]
    (copy,) = queue.copies
    assert _value(copy, "worker_deaths") == "1"
    assert queue.deleted == ["m1"]
    assert received not in heartbeat


async def test_when_no_copy_can_be_sent_the_request_is_made_visible_again() -> None:
    queue = CopyQueue(failures=100)
    heartbeat = Heartbeat(queue, 30, FakeClock())  # type: ignore[arg-type]
    received = message(ApproximateReceiveCount=1)
    heartbeat.track(received)
    await attempts.hand_on(heartbeat, queue, received, died=1, within_s=0.5)  # type: ignore[arg-type]
    assert queue.copies == []
    # Its receive count then tells of the death.
    assert queue.changes == [("m1", 0)]
    assert queue.deleted == []
