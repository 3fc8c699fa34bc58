"""The client configuration's retry count, and dead-letter copies within SQS's limits."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import aioboto3
import pytest
from botocore.exceptions import ClientError

from consumer.aws.clients import client_config
from consumer.aws.request_queue import MAX_MESSAGE_ATTRIBUTES, RequestQueue, dead_letter_attributes
from consumer.cli.local_aws import REGION
from consumer.clock import SystemClock, epoch_ms
from consumer.delivery.heartbeat import Heartbeat
from consumer.delivery.job import Job
from tests.chaos.proxy import Fault, FaultProxy, Rule, Service, proxy_in_thread
from tests.support.aws import Stack
from tests.support.fakes import FakeClock, FakeQueue, message


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    with proxy_in_thread(moto_endpoint, seed=1) as started:
        yield started


@pytest.mark.parametrize("attempts", [1, 3])
async def test_max_attempts_counts_every_attempt(
    proxy: FaultProxy, stack: Stack, attempts: int
) -> None:
    operation = "GetQueueAttributes"
    proxy.add(Rule(Fault.ERROR, service=Service.SQS, operation=operation))
    session = aioboto3.Session(region_name=REGION)
    config = client_config(max_attempts=attempts)
    async with session.client("sqs", endpoint_url=proxy.url, config=config) as sqs:
        with pytest.raises(ClientError):
            await sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["All"])
    assert proxy.calls(Service.SQS, operation) == attempts


def _attribute(value: str) -> dict[str, Any]:
    return {"DataType": "String", "StringValue": value, "StringListValues": []}


def _received(stack: Stack, url: str) -> dict[str, Any]:
    response = stack.client("sqs").receive_message(
        QueueUrl=url, MessageAttributeNames=["All"], WaitTimeSeconds=1
    )
    (copy,) = response["Messages"]
    return dict(copy)


async def _dead_letter(stack: Stack, attributes: dict[str, Any], body: str) -> dict[str, Any]:
    incoming = dataclasses.replace(message("m-dlq"), body=body, message_attributes=attributes)
    session = aioboto3.Session(region_name=REGION)
    async with session.client("sqs", endpoint_url=stack.endpoint, config=client_config()) as sqs:
        queue = RequestQueue(sqs, stack.queue_url, SystemClock())
        await queue.dead_letter(incoming, stack.dlq_url, "invalid_request", "bad body")
    return _received(stack, stack.dlq_url)


async def test_dead_letter_copy_of_ten_attributes_stays_within_the_limit(stack: Stack) -> None:
    # Ten incoming attributes, the signature among them, sorting in the middle.
    names = [f"attr{i:02d}" for i in range(9)] + ["signature"]
    attributes = {name: _attribute(f"value-of-{name}") for name in names}
    body = '{"not": "changed"}'
    copy = await _dead_letter(stack, attributes, body)
    kept = copy["MessageAttributes"]
    assert len(kept) == MAX_MESSAGE_ATTRIBUTES
    assert copy["Body"] == body
    assert kept["error_code"]["StringValue"] == "invalid_request"
    assert kept["signature"]["StringValue"] == "value-of-signature"
    # The first by name fill the places left; the others are named in the message.
    assert sorted(set(kept) - {"error_code", "error_message", "signature"}) == names[:7]
    assert kept["error_message"]["StringValue"] == ("bad body (attributes dropped: attr07, attr08)")
    for name in names[:7]:
        assert kept[name]["StringValue"] == f"value-of-{name}"


async def test_dead_letter_copy_under_the_limit_keeps_everything(stack: Stack) -> None:
    attributes = {name: _attribute(name) for name in ("a", "signature", "z")}
    copy = await _dead_letter(stack, attributes, "{}")
    kept = copy["MessageAttributes"]
    assert set(kept) == {"a", "signature", "z", "error_code", "error_message"}
    assert kept["error_message"]["StringValue"] == "bad body"


def test_a_redriven_copy_replaces_its_old_error_attributes() -> None:
    names = ["error_code", "error_message", "signature", *(f"x{i}" for i in range(8))]
    kept, dropped = dead_letter_attributes({name: _attribute(name) for name in names})
    # Eight places: the signature and the first seven others; the old errors go.
    assert list(kept) == ["signature", *(f"x{i}" for i in range(7))]
    assert dropped == ["x7"]


class _IdlePoll:
    """An SQS client whose long poll waits `idle_s` (on a fake clock) before one message."""

    def __init__(self, clock: FakeClock, idle_s: float) -> None:
        self.clock, self.idle_s = clock, idle_s

    async def receive_message(self, **_: Any) -> dict[str, Any]:
        self.clock.advance(self.idle_s)
        sent = epoch_ms(self.clock.now()) - 12
        attributes = {"ApproximateReceiveCount": "1", "SentTimestamp": str(sent)}
        return {"Messages": [{"MessageId": "m", "ReceiptHandle": "r", "Attributes": attributes}]}


async def test_total_counts_from_the_receipt_not_the_idle_long_poll() -> None:
    clock = FakeClock()
    sqs: Any = _IdlePoll(clock, idle_s=19.0)
    (received,) = await RequestQueue(sqs, "url", clock).receive(1, 20, 10)
    # Deadlines still count from before the call; the job's total from after it.
    assert received.returned_at is not None
    assert received.returned_at - received.received_at == 19.0
    job = Job(received, clock, Heartbeat(FakeQueue(), 30, clock))  # type: ignore[arg-type]
    clock.advance(0.5)
    assert job.final_timings() == {"queue_wait": 12, "total": 500}
