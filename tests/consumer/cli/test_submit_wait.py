"""`illustrator submit --wait` knows its own message: an anonymous failure of
the request it sent, or the request in the DLQ with no event, ends the wait at
once with what to do, against a real worker (builtin:blank) on moto."""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest
from pydantic import SecretStr

from consumer.cli import event_waiter
from consumer.cli import main as cli
from consumer.cli.run import load_generator
from consumer.delivery.options import WorkerOptions
from consumer.service.wiring import serve
from tests.support.aws import Stack
from tests.support.helpers import settings

TOKEN = "the-workers-token-0123456789"
# The wait may take this long at most: far less than its --timeout.
PROMPTLY_S = 30


def _visible(stack: Stack) -> int:
    counts = stack.queue_counts()
    return counts[0]


async def _worker_once(stack: Stack, requests: int) -> int:
    """A signing worker that runs once `requests` are waiting, until the queue is empty."""
    deadline = time.monotonic() + PROMPTLY_S
    while await asyncio.to_thread(_visible, stack) < requests:
        assert time.monotonic() < deadline, "the request was never sent"
        await asyncio.sleep(0.05)
    configured = settings(
        auth_enabled=True, auth_token=SecretStr(TOKEN), model_path="builtin:blank"
    )
    options = WorkerOptions(burst=True, poll_wait_s=1)
    return await serve(configured, load_generator, options=options, handle_signals=False)


def _sent_message_id(err: str) -> str:
    found = re.search(r"sent job \S+ \(message ([^)]+)\)", err)
    assert found, err
    return found.group(1)


@pytest.mark.parametrize(
    ("signing", "says"),
    [
        ({}, "set AUTH_ENABLED=true and AUTH_TOKEN to the workers' token"),
        ({"AUTH_ENABLED": "true", "AUTH_TOKEN": "an-old-token"}, "the signature did not verify"),
    ],
)
async def test_an_unverified_request_is_reported_at_once_with_what_to_do(
    stack: Stack,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    signing: dict[str, str],
    says: str,
) -> None:
    for name, value in signing.items():
        monkeypatch.setenv(name, value)
    # Another sender's unverified request fails too, anonymously, first in the queue.
    decoy = stack.send({"job_id": "someone-else", "kind": "memory", "user_id": "x"})
    argv = ["submit", "memory", "--user-id", "u1", "--prompt", "p", "--job-id", "smoke"]
    argv += ["--wait", "--timeout", "60"]
    started = time.monotonic()

    status, worker = await asyncio.gather(
        asyncio.to_thread(cli.main, argv), _worker_once(stack, requests=2)
    )

    assert (status, worker) == (1, 0)
    assert time.monotonic() - started < PROMPTLY_S
    captured = capsys.readouterr()
    mine = _sent_message_id(captured.err)
    # The worker runs in this process too: its log lines come before and after.
    event, _ = json.JSONDecoder().raw_decode(captured.out, captured.out.index("{\n"))
    assert (event["job_id"], event["sqs_message_id"]) == (None, mine)
    assert mine != decoy
    assert event["error"]["code"] == "unauthorized"
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith(f"illustrator submit: job smoke (message {mine}) failed: unauthorized")
    assert says in last


async def test_a_request_sqs_dead_letters_without_an_event_is_found_there(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(event_waiter, "DLQ_LOOK_S", 1)
    argv = ["submit", "memory", "--user-id", "u2", "--prompt", "p", "--job-id", "crashes"]
    argv += ["--wait", "--timeout", "60"]

    def crashing_workers() -> None:
        # Workers that take the request and die before they finish it, until
        # SQS moves it to the DLQ (maxReceiveCount 3: on the fourth receive).
        deadline = time.monotonic() + PROMPTLY_S
        while True:
            assert time.monotonic() < deadline, "the request never reached the DLQ"
            stack.client("sqs").receive_message(
                QueueUrl=stack.queue_url, VisibilityTimeout=0, WaitTimeSeconds=1
            )
            if stack.queue_counts(stack.dlq_url) != (0, 0):
                return

    started = time.monotonic()
    status, _ = await asyncio.gather(
        asyncio.to_thread(cli.main, argv), asyncio.to_thread(crashing_workers)
    )

    assert status == 1
    assert time.monotonic() - started < PROMPTLY_S
    err = capsys.readouterr().err
    mine = _sent_message_id(err)
    last = err.strip().splitlines()[-1]
    assert last.startswith(
        f"illustrator submit: job crashes is in the dead-letter queue {stack.dlq_url} "
        f"(message {mine}) without a completion event"
    )
    assert "maxReceiveCount" in last
    assert "illustrator dlq list" in last


async def test_the_anonymous_subscription_takes_only_events_that_name_no_job(
    stack: Stack,
) -> None:
    from consumer.aws.clients import client_config, make_session
    from consumer.cli.event_waiter import waiting_for

    session = make_session("us-east-1")
    sns = stack.client("sns")
    async with (
        session.client("sqs", config=client_config()) as sqs_client,
        session.client("sns", config=client_config()) as sns_client,
        waiting_for(sqs_client, sns_client, stack.topic_arn, "mine") as waiter,
    ):
        waiter.message_ids.add("m-mine")
        for job, kind, message_id in (
            ("theirs", "memory", "m-theirs"),
            (None, "unknown", "m-other"),
            (None, "unknown", "m-mine"),
        ):
            sns.publish(
                TopicArn=stack.topic_arn,
                Message=json.dumps({"job_id": job, "sqs_message_id": message_id}),
                MessageAttributes={"kind": {"DataType": "String", "StringValue": kind}},
            )
        waited = await waiter.wait(10)
    assert waited.event == {"job_id": None, "sqs_message_id": "m-mine"}
    assert waited.anonymous
