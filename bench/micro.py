"""The cost of the pieces of one job on this machine, to explain the totals.

Each figure is the median of a few repetitions of one synchronous call against
moto's server on loopback (or one local step), measured from the harness.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable

from PIL import Image

from bench.workload import AVATAR_KEY, avatar_png
from consumer.cli.local_aws import SandboxResources

REPEATS = 15


def _median_ms(action: Callable[[], object], repeats: int = REPEATS) -> float:
    action()  # the first call pays for connections and caches
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(samples), 2)


def _encode_png(side: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (side, side), (128, 128, 128)).save(out, format="PNG")
    return out.getvalue()


def _decode(data: bytes) -> None:
    Image.open(io.BytesIO(data)).convert("RGB")


def _sqs_round_trip(stack: SandboxResources) -> Callable[[], None]:
    sqs = stack.client("sqs")
    queue = sqs.create_queue(QueueName="bench-micro-scratch")["QueueUrl"]

    def round_trip() -> None:
        sqs.send_message(QueueUrl=queue, MessageBody="{}")
        message = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1)["Messages"][0]
        sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])

    return round_trip


def _subscribed_topic(stack: SandboxResources) -> str:
    """A topic delivering to a queue of its own, as the events' topic does."""
    sqs, sns = stack.client("sqs"), stack.client("sns")
    sink = sqs.create_queue(QueueName="bench-micro-sink")["QueueUrl"]
    sink_arn = sqs.get_queue_attributes(QueueUrl=sink, AttributeNames=["QueueArn"])
    topic: str = sns.create_topic(Name="bench-micro")["TopicArn"]
    sns.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=sink_arn["Attributes"]["QueueArn"],
        Attributes={"RawMessageDelivery": "true"},
    )
    return topic


def measure(stack: SandboxResources, side: int, avatar_side: int) -> dict[str, float]:
    """Milliseconds per step of a job, each on its own.

    Uses scratch queues and a scratch topic, so the figures do not disturb
    the benchmark's own queues.
    """
    s3, sns = stack.client("s3"), stack.client("sns")
    picture = _encode_png(side)
    avatar = avatar_png(avatar_side)
    scratch_topic = _subscribed_topic(stack)
    return {
        "png_encode_output": _median_ms(lambda: _encode_png(side)),
        "png_decode_avatar": _median_ms(lambda: _decode(avatar)),
        "s3_get_avatar": _median_ms(
            lambda: s3.get_object(Bucket=stack.bucket, Key=AVATAR_KEY)["Body"].read()
        ),
        "s3_put_output": _median_ms(
            lambda: s3.put_object(Bucket=stack.bucket, Key="bench-micro.png", Body=picture)
        ),
        "sns_publish": _median_ms(lambda: sns.publish(TopicArn=scratch_topic, Message="{}")),
        "sqs_send_receive_delete": _median_ms(_sqs_round_trip(stack)),
    }
