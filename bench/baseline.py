"""The baseline: the plain sequential loop a user would otherwise write.

Synchronous boto3, one message at a time: receive, download the avatar,
generate (a sleep of ``BLANK_LATENCY_MS``, like ``builtin:blank``), encode and
upload the PNG, publish the event, delete the request. Nothing overlaps, so
every millisecond of I/O is a millisecond the GPU would stand idle.

Run by the harness as ``python -m bench.baseline`` with the consumer's
variables (``SQS_QUEUE_URL``, ``SNS_TOPIC_ARN``, ``S3_BUCKET_NAME``,
``AWS_ENDPOINT_URL``...) plus ``BENCH_READY_FILE``, touched once it polls.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any

import boto3
from PIL import Image


def _ms(start: float, end: float) -> int:
    return round((end - start) * 1000)


def handle(message: dict[str, Any], clients: dict[str, Any], latency_s: float) -> None:
    """Process one request from start to finish."""
    bucket, topic = os.environ["S3_BUCKET_NAME"], os.environ["SNS_TOPIC_ARN"]
    started = time.monotonic()
    request = json.loads(message["Body"])
    user, kind, job = request["user_id"], request["kind"], request["job_id"]
    body = clients["s3"].get_object(Bucket=bucket, Key=f"avatars/{user}.png")["Body"].read()
    Image.open(io.BytesIO(body)).convert("RGB")
    downloaded = time.monotonic()
    time.sleep(latency_s)
    shade = 64 + request["seed"] % 128  # as builtin:blank draws it
    picture = Image.new("RGB", (request["width"], request["height"]), (shade, shade, shade))
    generated = time.monotonic()
    out = io.BytesIO()
    picture.save(out, format="PNG")
    key = f"generated/{user}/{kind}_{job}.png"
    clients["s3"].put_object(Bucket=bucket, Key=key, Body=out.getvalue(), ContentType="image/png")
    uploaded = time.monotonic()
    event = {
        "version": 1,
        "job_id": job,
        "kind": kind,
        "user_id": user,
        "status": "succeeded",
        "data": [{"s3_uri": f"s3://{bucket}/{key}"}],
        "timings_ms": {
            "download": _ms(started, downloaded),
            "generate": _ms(downloaded, generated),
            "upload": _ms(generated, uploaded),
            "total": _ms(started, uploaded),
        },
        "worker_id": os.environ.get("WORKER_ID", "baseline"),
        "sqs_message_id": message["MessageId"],
    }
    clients["sns"].publish(
        TopicArn=topic,
        Message=json.dumps(event),
        MessageAttributes={
            "status": {"DataType": "String", "StringValue": "succeeded"},
            "kind": {"DataType": "String", "StringValue": kind},
        },
    )
    clients["sqs"].delete_message(
        QueueUrl=os.environ["SQS_QUEUE_URL"], ReceiptHandle=message["ReceiptHandle"]
    )


def main() -> None:
    """Poll forever; the harness ends the process with SIGTERM."""
    clients: dict[str, Any] = {name: boto3.client(name) for name in ("sqs", "s3", "sns")}
    latency_s = int(os.environ.get("BLANK_LATENCY_MS", "0")) / 1000
    Path(os.environ["BENCH_READY_FILE"]).touch()
    while True:
        response = clients["sqs"].receive_message(
            QueueUrl=os.environ["SQS_QUEUE_URL"], MaxNumberOfMessages=1, WaitTimeSeconds=20
        )
        for message in response.get("Messages", []):
            handle(message, clients, latency_s)


if __name__ == "__main__":
    main()
