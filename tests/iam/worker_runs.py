"""The real consumer (`illustrator run`, builtin:blank) as WorkerRole, and what
AutoBio does around it as the producer role, on the IAM-enforcing stack."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from consumer.contract.signing import sign
from tests.iam.stack import ROOT, TOKEN, IamStack
from tests.support.helpers import memory, png


class Worker:
    """One `python -m consumer run` with the worker role's credentials."""

    def __init__(self, stack: IamStack, log: Path, *, burst: bool = True, **env: str) -> None:
        environment = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
            **stack.worker_environment(),
            "MODEL_PATH": "builtin:blank",
            "HEALTH_HOST": "127.0.0.1",
            "HEALTH_PORT": "0",
            "LOG_FORMAT": "json",
            "PYTHONPATH": str(ROOT),
            **env,
        }
        self.log = log
        command = [sys.executable, "-m", "consumer", "run", *(["--burst"] if burst else [])]
        with log.open("wb") as out:
            self.process = subprocess.Popen(command, env=environment, stdout=out, stderr=out)

    def events(self) -> list[dict[str, Any]]:
        """The log lines written so far, as JSON objects."""
        lines = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def logged(self, event: str) -> bool:
        """Whether a line with this event name was logged."""
        return any(line.get("event") == event for line in self.events())

    def wait_for(self, check: Callable[[], bool], within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while not check():
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, self.log.read_text()[-3000:]
            time.sleep(0.05)

    def finish(self, within: float = 60.0) -> int:
        """Wait for the worker to exit; its status."""
        try:
            return self.process.wait(within)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(self.log.read_text()[-3000:]) from None

    def drain(self) -> int:
        """SIGTERM, then the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.finish()


class Producer:
    """AutoBio, with the producer role's credentials: uploads, requests, cancels."""

    def __init__(self, stack: IamStack) -> None:
        self.stack = stack
        self.s3 = stack.client("s3", stack.producer)
        self.sqs = stack.client("sqs", stack.producer)
        self.bucket = stack.outputs["BucketName"]

    def upload(self, user: str) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=f"avatars/{user}.png", Body=png())

    def send(
        self, job_id: str, user: str, *, priority: bool = False, token: str = TOKEN
    ) -> dict[str, Any]:
        body = json.dumps(memory(job_id, user))
        signature = sign(body.encode(), token)
        url = self.stack.outputs["PriorityQueueUrl" if priority else "RequestQueueUrl"]
        self.sqs.send_message(
            QueueUrl=url,
            MessageBody=body,
            MessageAttributes={"signature": {"DataType": "String", "StringValue": signature}},
            MessageGroupId=user,
        )
        return {"body": body, "url": url}

    def cancel(self, user: str, job_id: str) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=f"cancellations/{user}/{job_id}", Body=b"")


def completion_events(stack: IamStack) -> list[dict[str, Any]]:
    """The events delivered to the events queue so far (read as the administrator)."""
    sqs = stack.client("sqs")
    found: list[dict[str, Any]] = []
    while True:
        response = sqs.receive_message(
            QueueUrl=stack.outputs["EventsQueueUrl"], MaxNumberOfMessages=10, WaitTimeSeconds=0
        )
        messages = response.get("Messages", [])
        if not messages:
            return found
        for message in messages:
            found.append(json.loads(message["Body"]))
            sqs.delete_message(
                QueueUrl=stack.outputs["EventsQueueUrl"], ReceiptHandle=message["ReceiptHandle"]
            )


def queue_messages(stack: IamStack, output: str) -> list[dict[str, Any]]:
    """Every visible message of a queue, received (and so hidden) by the administrator."""
    sqs = stack.client("sqs")
    found: list[dict[str, Any]] = []
    while True:
        response = sqs.receive_message(
            QueueUrl=stack.outputs[output],
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            VisibilityTimeout=600,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        )
        if not response.get("Messages"):
            return found
        found.extend(response["Messages"])
