"""moto's server as a child process on loopback, and fresh resources on it.

The server runs in a process of its own rather than a thread of the harness:
its request handling then competes with the consumer for the CPU as a real
network service would, not for the harness's interpreter lock.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import urllib.error
import urllib.request
import uuid

from bench.procs import LOOPBACK, Child, Children, base_environment, free_port, wait_until
from consumer.cli.local_aws import SANDBOX_ENVIRONMENT, SandboxResources, create_resources

START_TIMEOUT_S = 60.0


def closes_connections(url: str) -> bool:
    """Whether the server answers ``Connection: close`` (every call then pays
    for a new TCP connection, and moto for a new thread)."""
    with urllib.request.urlopen(f"{url}/moto-api/", timeout=5) as response:
        return str(response.headers.get("Connection", "")).lower() == "close"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
            return True
    except (urllib.error.URLError, OSError):
        return False


def start_moto(children: Children) -> tuple[Child, str]:
    """Start moto's server on a free loopback port; the child and its URL."""
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    argv = [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)]
    child = children.start("moto", argv, base_environment(SANDBOX_ENVIRONMENT))
    wait_until(lambda: _answers(url), child, START_TIMEOUT_S, interval_s=0.1)
    return child, url


VISIBILITY_TIMEOUT_S = 30
MAX_RECEIVE_COUNT = 3


def fresh_stack(url: str) -> SandboxResources:
    """A new queue (with DLQ), topic, bucket and observer queue on the server."""
    return create_resources(
        url, "bench", visibility_timeout=VISIBILITY_TIMEOUT_S, max_receive_count=MAX_RECEIVE_COUNT
    )


def with_fresh_queue(stack: SandboxResources) -> SandboxResources:
    """`stack` with a new request queue of the same configuration.

    Each system under test gets a queue of its own because a stopped process's
    long poll lives on in the server: it takes the next message sent and hides
    it for the visibility it asked for (the baseline's is the queue's 30 s),
    which would stall the next system for that long. The DLQ, topic, bucket
    and observer queue stay shared.
    """
    sqs = stack.client("sqs")
    dlq_arn = sqs.get_queue_attributes(QueueUrl=stack.dlq_url, AttributeNames=["QueueArn"])
    redrive = {
        "deadLetterTargetArn": dlq_arn["Attributes"]["QueueArn"],
        "maxReceiveCount": str(MAX_RECEIVE_COUNT),
    }
    queue_url: str = sqs.create_queue(
        QueueName=f"requests-{uuid.uuid4().hex[:12]}",
        Attributes={
            "VisibilityTimeout": str(VISIBILITY_TIMEOUT_S),
            "RedrivePolicy": json.dumps(redrive),
        },
    )["QueueUrl"]
    return dataclasses.replace(stack, queue_url=queue_url)
