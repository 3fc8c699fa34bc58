"""Receive the service's events: a queue of your own subscribed to the topic.

Needs only boto3. Reads SNS_TOPIC_ARN from the environment. Creates a queue,
subscribes it with a filter on the `status` message attribute, prints each
event as one JSON line, and removes the queue and subscription at the end.
Handles both raw delivery (`--raw`: the body is the event) and SNS's
envelope (the event is the envelope's `Message`).

    python docs/examples/subscriber.py --status succeeded --status failed --count 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from typing import Any

import boto3

STATUSES = ("succeeded", "failed", "cancelled", "started")


def event_of(body: str) -> dict[str, Any] | None:
    """The event in a delivered body, raw or in an SNS envelope; None if neither."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if data.get("Type") == "Notification" and isinstance(data.get("Message"), str):
        return event_of(data["Message"])
    return data


def subscribe(
    sqs: Any, sns: Any, topic_arn: str, statuses: list[str], raw: bool
) -> tuple[str, str]:
    """A new queue subscribed to the topic for events of `statuses`: (queue url, subscription)."""
    queue_url = sqs.create_queue(QueueName=f"illustrator-events-{uuid.uuid4().hex[:12]}")[
        "QueueUrl"
    ]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    # Only the topic may send to the queue.
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
            }
        ],
    }
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)})
    subscription = sns.subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={
            "RawMessageDelivery": "true" if raw else "false",
            # The service sets the `status` and `kind` attributes on every event.
            "FilterPolicy": json.dumps({"status": statuses}),
        },
        ReturnSubscriptionArn=True,
    )["SubscriptionArn"]
    return queue_url, subscription


def receive(
    sqs: Any, queue_url: str, statuses: list[str], count: int, timeout_s: float
) -> list[dict[str, Any]]:
    """Up to `count` events of `statuses`, within `timeout_s`; each deleted once read."""
    events: list[dict[str, Any]] = []
    # Events can come twice in rare failures: keep one per job id and status
    # (per SQS message for an event that names no job).
    seen: set[tuple[object, object]] = set()
    deadline = time.monotonic() + timeout_s
    while len(events) < count and time.monotonic() < deadline:
        wait = max(0, min(20, int(deadline - time.monotonic())))
        response = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait
        )
        for message in response.get("Messages", []):
            event = event_of(message["Body"])
            # A new filter policy can take minutes to apply on AWS: check here too.
            if event is not None and event.get("status") in statuses:
                key = (event.get("job_id") or event.get("sqs_message_id"), event.get("status"))
                if key not in seen and len(events) < count:
                    seen.add(key)
                    events.append(event)
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return events


def main() -> None:
    """Subscribe, print events as JSON lines, clean up."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--status", action="append", choices=STATUSES, help="repeatable")
    parser.add_argument("--raw", action="store_true", help="raw message delivery")
    parser.add_argument("--count", type=int, default=1, help="stop after N events")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after S seconds")
    args = parser.parse_args()
    statuses = args.status or ["succeeded", "failed"]

    region = os.environ.get("AWS_REGION", "us-east-1")
    sqs = boto3.client("sqs", region_name=region)
    sns = boto3.client("sns", region_name=region)
    queue_url, subscription = subscribe(sqs, sns, os.environ["SNS_TOPIC_ARN"], statuses, args.raw)
    print(f"subscribed {queue_url}", file=sys.stderr, flush=True)
    try:
        for event in receive(sqs, queue_url, statuses, args.count, args.timeout):
            print(json.dumps(event), flush=True)
    finally:
        sns.unsubscribe(SubscriptionArn=subscription)
        sqs.delete_queue(QueueUrl=queue_url)


if __name__ == "__main__":
    main()
