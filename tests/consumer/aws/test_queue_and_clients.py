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
from consumer.clock import SystemClock
from tests.aws import REGION, Stack
from tests.chaos.proxy import Fault, FaultProxy, Rule, Service, proxy_in_thread
from tests.consumer.fakes import message


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
