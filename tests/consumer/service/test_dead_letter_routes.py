"""`python -m consumer run` and `python -m consumer dlq` as processes: each
request queue dead-letters to its own DLQ, a redrive returns each request to
the queue it came from, and the user's MessageGroupId travels with it.

The environment names the request queue's DLQ in ``SQS_DLQ_URL`` (as the
template does); the priority queue's failures must still land in the priority
queue's own RedrivePolicy target.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.consumer.delivery.test_priority import _priority_queue
from tests.consumer.service.test_process import ROOT, consumer
from tests.support.aws import Stack
from tests.support.helpers import Observer, eventually, memory


def _send(stack: Stack, url: str, body: dict[str, Any], group: str) -> None:
    stack.client("sqs").send_message(
        QueueUrl=url, MessageBody=json.dumps(body), MessageGroupId=group
    )


async def _burst(tmp_path: Path, env: dict[str, str]) -> None:
    """One `run --burst` over both queues, until it exits by itself."""
    command = ("-m", "consumer", "run", "--burst")
    with consumer(tmp_path, command=command, **env) as (process, _):
        await eventually(lambda: process.poll() is not None, within=60, what="the burst to end")
        assert process.returncode == 0


def _dlq(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer", "dlq", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _jobs(messages: list[dict[str, Any]]) -> dict[str, str | None]:
    """job_id -> MessageGroupId of received messages."""
    return {
        json.loads(m["Body"])["job_id"]: m.get("Attributes", {}).get("MessageGroupId")
        for m in messages
    }


def _release(stack: Stack, url: str, messages: list[dict[str, Any]]) -> None:
    sqs = stack.client("sqs")
    for message in messages:
        sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )


async def test_each_queue_dead_letters_to_its_own_dlq_and_redrives_back(
    stack: Stack, tmp_path: Path
) -> None:
    priority_url, priority_dlq = _priority_queue(stack)
    env = {"SQS_DLQ_URL": stack.dlq_url, "SQS_PRIORITY_QUEUE_URL": priority_url}
    observer = Observer(stack)
    # No avatar for either user yet: both fail permanently (input_not_found).
    _send(stack, priority_url, memory("urgent-1", user_id="pat"), group="pat")
    _send(stack, stack.queue_url, memory("bulk-1", user_id="bob"), group="bob")
    await _burst(tmp_path, env)
    events = await observer.wait(2, within=20)
    assert {(e["job_id"], e["status"]) for e in events} == {
        ("urgent-1", "failed"),
        ("bulk-1", "failed"),
    }

    # Each failure sits in its own queue's DLQ, still in its user's group.
    in_priority_dlq = stack.receive_all(priority_dlq)
    in_bulk_dlq = stack.receive_all(stack.dlq_url)
    assert _jobs(in_priority_dlq) == {"urgent-1": "pat"}
    assert _jobs(in_bulk_dlq) == {"bulk-1": "bob"}
    _release(stack, priority_dlq, in_priority_dlq)
    _release(stack, stack.dlq_url, in_bulk_dlq)

    # The operator redrives each DLQ by copy: back to the queue it came from.
    priority = _dlq("--priority", "redrive", "--method", "copy", env=env)
    assert priority.returncode == 0, priority.stdout + priority.stderr
    assert f"moved 1 message(s) to {priority_url}" in priority.stdout
    bulk = _dlq("redrive", "--method", "copy", env=env)
    assert bulk.returncode == 0, bulk.stdout + bulk.stderr
    assert f"moved 1 message(s) to {stack.queue_url}" in bulk.stdout
    back_on_priority = stack.receive_all(priority_url)
    back_on_bulk = stack.receive_all(stack.queue_url)
    assert _jobs(back_on_priority) == {"urgent-1": "pat"}
    assert _jobs(back_on_bulk) == {"bulk-1": "bob"}
    assert stack.receive_all(priority_dlq) == stack.receive_all(stack.dlq_url) == []
    _release(stack, priority_url, back_on_priority)
    _release(stack, stack.queue_url, back_on_bulk)

    # With the cause fixed, the redriven requests succeed where they now are.
    stack.put_input("avatars/pat.png")
    stack.put_input("avatars/bob.png")
    await _burst(tmp_path, env)
    events = await observer.wait(4, within=20)
    assert {e["job_id"] for e in events if e["status"] == "succeeded"} == {"urgent-1", "bulk-1"}
