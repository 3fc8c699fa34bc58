"""SQS helpers shared by the worker and the operator commands: queue lookups,
redrive policies and attribute copies."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import MessageAttributeValueTypeDef

# The attributes a consumer adds when it dead-letters a request (contract
# section 4); a redrive drops them so the request looks as AutoBio sent it.
ERROR_ATTRIBUTES = frozenset({"error_code", "error_message"})


async def queue_arn(sqs: SQSClient, url: str) -> str:
    """The ARN of the queue at `url`."""
    response = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return response["Attributes"]["QueueArn"]


async def url_of_arn(sqs: SQSClient, arn: str) -> str:
    """The URL of the queue named by `arn`, which may belong to another account."""
    parts = arn.split(":")
    if len(parts) != 6 or parts[2] != "sqs":
        raise ValueError(f"not an SQS queue ARN: {arn!r}")
    response = await sqs.get_queue_url(QueueName=parts[5], QueueOwnerAWSAccountId=parts[4])
    return response["QueueUrl"]


def redrive_policy(attributes: Mapping[Any, str]) -> tuple[str | None, int | None]:
    """The DLQ's ARN and ``maxReceiveCount`` of a queue's ``RedrivePolicy`` attribute."""
    policy = json.loads(attributes.get("RedrivePolicy") or "{}")
    target = policy.get("deadLetterTargetArn")
    count = policy.get("maxReceiveCount")
    return (str(target) if target else None), (int(count) if count is not None else None)


async def dead_letter_url(sqs: SQSClient, queue_url: str, configured: str = "") -> str | None:
    """The DLQ: `configured` when set, else the request queue's RedrivePolicy target."""
    if configured:
        return configured
    response = await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])
    target, _ = redrive_policy(response.get("Attributes", {}))
    return await url_of_arn(sqs, target) if target else None


def copyable_attributes(
    attributes: Mapping[str, Any], drop: Iterable[str] = ()
) -> dict[str, MessageAttributeValueTypeDef]:
    """Message attributes as SendMessage accepts them, without the names in `drop`.

    Received attributes carry empty ``StringListValues``/``BinaryListValues``
    fields that SendMessage rejects, so only the type and the value are kept.
    """
    dropped = set(drop)
    copied: dict[str, MessageAttributeValueTypeDef] = {}
    for name, value in attributes.items():
        if name in dropped:
            continue
        kept: MessageAttributeValueTypeDef = {"DataType": value["DataType"]}
        if "StringValue" in value:
            kept["StringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            kept["BinaryValue"] = value["BinaryValue"]
        copied[name] = kept
    return copied


def attributes_size(attributes: Mapping[str, Mapping[str, Any]]) -> int:
    """What SQS counts towards the message size for these attributes."""
    total = 0
    for name, value in attributes.items():
        total += len(name.encode()) + len(str(value["DataType"]).encode())
        text = value.get("StringValue")
        if isinstance(text, str):
            total += len(text.encode())
        binary = value.get("BinaryValue")
        if isinstance(binary, bytes | bytearray | str):
            total += len(binary)
    return total
