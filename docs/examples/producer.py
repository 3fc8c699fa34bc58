"""Send one illustration request, as AutoBio does: signed, grouped by user; or cancel one.

Needs only boto3. Reads SQS_QUEUE_URL and, when the service has
AUTH_ENABLED=true, AUTH_TOKEN from the environment (AWS credentials, region
and AWS_ENDPOINT_URL come from the usual AWS chain). Prints the job id.

    python docs/examples/producer.py memory --user-id demo --prompt "a day at the sea"

To cancel a job, write any object at <S3_CANCEL_PREFIX><user_id>/<job_id> in
S3_BUCKET_NAME (S3_CANCEL_PREFIX defaults to cancellations/); its completion
event then says "cancelled", unless its pictures were already written:

    python docs/examples/producer.py cancel --user-id demo --job-id memory-...
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import uuid
from typing import Any

import boto3


def sign(body: bytes, token: str) -> str:
    """The `signature` attribute: lowercase hex HMAC-SHA256 of the exact body bytes."""
    return hmac.new(token.encode("utf-8"), body, hashlib.sha256).hexdigest()


def send_request(sqs: Any, queue_url: str, request: dict[str, Any], token: str | None) -> str:
    """Send `request`; sign it when `token` is given. Returns the SQS message id."""
    # Sign the bytes that are sent: re-serialising after signing would break it.
    body = json.dumps(request, separators=(",", ":"), ensure_ascii=False)
    message: dict[str, Any] = {
        "QueueUrl": queue_url,
        "MessageBody": body,
        # Fair queues: one user's burst does not hold up everyone else's requests.
        "MessageGroupId": request["user_id"],
    }
    if token:
        message["MessageAttributes"] = {
            "signature": {"DataType": "String", "StringValue": sign(body.encode("utf-8"), token)}
        }
    response = sqs.send_message(**message)
    return str(response["MessageId"])


def cancel_job(s3: Any, bucket: str, prefix: str, user_id: str, job_id: str) -> str:
    """Write the job's cancellation marker (an empty object); returns its key."""
    key = f"{prefix}{user_id}/{job_id}"
    s3.put_object(Bucket=bucket, Key=key, Body=b"")
    return key


def main() -> None:
    """Build the request from the command line and send it, or cancel a job."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["memory", "subject", "cancel"])
    parser.add_argument("--user-id", required=True)
    parser.add_argument("--prompt")
    parser.add_argument("--job-id", help="the idempotency key (default: a new one)")
    parser.add_argument("--steps", type=int, help="num_inference_steps")
    parser.add_argument("--num-images", type=int, help="1-4")
    args = parser.parse_args()
    region = os.environ.get("AWS_REGION", "us-east-1")

    if args.kind == "cancel":
        if not args.job_id:
            parser.error("cancel needs --job-id")
        s3 = boto3.client("s3", region_name=region)
        prefix = os.environ.get("S3_CANCEL_PREFIX", "cancellations/")
        cancel_job(s3, os.environ["S3_BUCKET_NAME"], prefix, args.user_id, args.job_id)
        print(args.job_id)
        return

    request: dict[str, Any] = {
        "version": 1,
        # Keep the job id with your own record: resending the same request with it
        # is safe (the service does not draw it twice), so retry on any send error.
        "job_id": args.job_id or f"{args.kind}-{uuid.uuid4().hex}",
        "kind": args.kind,
        "user_id": args.user_id,
    }
    optional = {
        "prompt": args.prompt,
        "num_inference_steps": args.steps,
        "num_images": args.num_images,
    }
    request.update({name: value for name, value in optional.items() if value is not None})
    sqs = boto3.client("sqs", region_name=region)
    send_request(sqs, os.environ["SQS_QUEUE_URL"], request, os.environ.get("AUTH_TOKEN"))
    print(request["job_id"])


if __name__ == "__main__":
    main()
