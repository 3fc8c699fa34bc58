"""`illustrator dlq list|redrive|purge` against moto's SQS."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from consumer.cli import main as cli
from consumer.cli.dlq import RECEIVE_NOTE
from consumer.cli.move_task import MoveTaskRedrive
from consumer.cli.redrive import CopyRedrive, RedriveReport, size_chunks
from tests.support.aws import Stack

Message = dict[str, Any]


def _body(job: str, kind: str = "memory", user: str = "user1") -> str:
    return json.dumps({"job_id": job, "kind": kind, "user_id": user, "prompt": "a dog"})


def _dead_letter(stack: Stack, body: str, code: str = "input_not_found", **extra: str) -> None:
    attributes = {
        "error_code": {"DataType": "String", "StringValue": code},
        "error_message": {"DataType": "String", "StringValue": f"{code} happened"},
        "signature": {"DataType": "String", "StringValue": "ab" * 32},
        "trace": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
    }
    for name, value in extra.items():
        attributes[name] = {"DataType": "String", "StringValue": value}
    stack.client("sqs").send_message(
        QueueUrl=stack.dlq_url, MessageBody=body, MessageAttributes=attributes
    )


def _drain(stack: Stack, url: str) -> list[Message]:
    """Every message on `url`, deleted as read, until the queue is empty."""
    sqs = stack.client("sqs")
    found: list[Message] = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not batch:
            return found
        for message in batch:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        found.extend(batch)


def _visible(stack: Stack, url: str) -> int:
    attributes = stack.client("sqs").get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    return int(attributes["Attributes"]["ApproximateNumberOfMessages"])


def test_list_shows_messages_and_leaves_them_visible(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    _dead_letter(stack, _body("m-001"), "invalid_input")
    _dead_letter(stack, _body("s-002", kind="subject", user="user2"), "input_not_found")
    _dead_letter(stack, "not json", "invalid_request")

    assert cli.main(["dlq", "list"]) == 0

    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "about 3 message(s); showing 3" in lines[0]
    assert lines[1].split() == [
        "MESSAGE", "ID", "JOB", "KIND", "USER", "ERROR", "AGE", "RECEIVES", "MESSAGE"
    ]  # fmt: skip
    rows = {line.split()[1]: line.split() for line in lines[2:5]}
    assert set(rows) == {"m-001", "s-002", "-"}
    assert rows["m-001"][1:5] == ["m-001", "memory", "user1", "invalid_input"]
    assert rows["s-002"][1:5] == ["s-002", "subject", "user2", "input_not_found"]
    assert rows["-"][1:5] == ["-", "-", "-", "invalid_request"]
    # The message id first, the error's message last.
    assert rows["m-001"][-2:] == ["invalid_input", "happened"]
    assert all(len(row[0]) >= 20 for row in rows.values())
    # Listing is a receive in SQS, and the command says so.
    assert lines[5] == "note: " + RECEIVE_NOTE
    # Released at once, not merely hidden until a timeout.
    assert _visible(stack, stack.dlq_url) == 3


def test_list_pages_past_one_batch_and_honours_limit(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    for index in range(13):
        _dead_letter(stack, _body(f"job-{index:02d}"))

    assert cli.main(["dlq", "list", "--json"]) == 0
    captured = capsys.readouterr()
    listed = [json.loads(line) for line in captured.out.splitlines()]
    assert captured.err == f"note: {RECEIVE_NOTE}\n"
    assert sorted(item["job_id"] for item in listed) == [f"job-{i:02d}" for i in range(13)]
    assert all(item["error_code"] == "input_not_found" for item in listed)
    assert all(0 <= item["age_s"] < 60 for item in listed)

    assert cli.main(["dlq", "list", "--json", "--limit", "4"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4
    assert _visible(stack, stack.dlq_url) == 13


def test_list_uses_sqs_dlq_url_when_set(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    other = stack.client("sqs").create_queue(QueueName=f"other-dlq-{time.time_ns()}")["QueueUrl"]
    stack.client("sqs").send_message(QueueUrl=other, MessageBody=_body("elsewhere"))
    monkeypatch.setenv("SQS_DLQ_URL", other)
    monkeypatch.delenv("SQS_QUEUE_URL")

    assert cli.main(["dlq", "list", "--json"]) == 0

    assert [json.loads(line)["job_id"] for line in capsys.readouterr().out.splitlines()] == [
        "elsewhere"
    ]


def test_redrive_keeps_bodies_and_attributes_but_drops_error_attributes(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    bodies = {_body(f"job-{i:02d}") for i in range(12)} | {"not json at all"}
    for body in bodies:
        _dead_letter(stack, body, extra="kept")

    assert cli.main(["dlq", "redrive", "--all"]) == 0

    captured = capsys.readouterr()
    # With --all a move task is tried first; moto has no StartMessageMoveTask,
    # so the command falls back to copying.
    assert "moving by copy" in captured.err
    assert "redrive (copy): moved 13 message(s)" in captured.out
    moved = _drain(stack, stack.queue_url)
    assert {m["Body"] for m in moved} == bodies
    for message in moved:
        attributes = message["MessageAttributes"]
        assert set(attributes) == {"signature", "trace", "extra", "redrive_run"}
        assert attributes["signature"]["StringValue"] == "ab" * 32
        assert attributes["trace"]["BinaryValue"] == b"\x00\x01"
        assert attributes["extra"]["StringValue"] == "kept"
    assert _drain(stack, stack.dlq_url) == []


def test_redrive_max_moves_exactly_that_many(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    for index in range(7):
        _dead_letter(stack, _body(f"job-{index}"))

    assert cli.main(["dlq", "redrive", "--max", "5"]) == 0

    assert "moved 5 message(s)" in capsys.readouterr().out
    assert len(_drain(stack, stack.queue_url)) == 5
    # The two left behind are visible at once, not hidden by the redrive.
    assert _visible(stack, stack.dlq_url) == 2


def test_redrive_without_a_dlq_is_a_usage_error(
    stack: Stack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = stack.client("sqs").create_queue(QueueName=f"plain-{time.time_ns()}")["QueueUrl"]
    monkeypatch.setenv("SQS_QUEUE_URL", plain)

    assert cli.main(["dlq", "redrive"]) == 2
    assert "no RedrivePolicy" in capsys.readouterr().err


class _FailingDelete:
    """An SQS client whose DeleteMessageBatch is interrupted (a Ctrl-C or crash)."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def delete_message_batch(self, **_: Any) -> Any:
        raise asyncio.CancelledError


async def test_interrupted_redrive_duplicates_but_never_loses(stack: Stack) -> None:
    from consumer.aws.clients import client_config, make_session

    for index in range(3):
        _dead_letter(stack, _body(f"job-{index}"))
    session = make_session("us-east-1")
    async with session.client("sqs", config=client_config()) as sqs:
        redrive = CopyRedrive(_FailingDelete(sqs), stack.dlq_url, stack.queue_url)  # type: ignore[arg-type]
        with pytest.raises(asyncio.CancelledError):
            await redrive.run()

    on_queue = {m["Body"] for m in _drain(stack, stack.queue_url)}
    still_dead = {m["Body"] for m in _drain(stack, stack.dlq_url)}
    expected = {_body(f"job-{i}") for i in range(3)}
    # Sent before the interruption and released on the DLQ again at once.
    assert on_queue == expected
    assert still_dead == expected


class _RefusingQueue:
    """An SQS client whose request queue refuses one message of each batch."""

    def __init__(self, real: Any, refused_body: str) -> None:
        self._real = real
        self._refused = refused_body

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def send_message_batch(self, QueueUrl: str, Entries: list[Any]) -> Any:
        refused = [e for e in Entries if e["MessageBody"] == self._refused]
        accepted = [e for e in Entries if e["MessageBody"] != self._refused]
        response = await self._real.send_message_batch(QueueUrl=QueueUrl, Entries=accepted)
        response["Failed"] = [
            {"Id": e["Id"], "Code": "InvalidMessageContents", "SenderFault": True, "Message": "no"}
            for e in refused
        ]
        return response


async def test_a_refused_message_stays_on_the_dlq(stack: Stack) -> None:
    from consumer.aws.clients import client_config, make_session

    for index in range(3):
        _dead_letter(stack, _body(f"job-{index}"))
    session = make_session("us-east-1")
    async with session.client("sqs", config=client_config()) as sqs:
        client = _RefusingQueue(sqs, _body("job-1"))
        report = await CopyRedrive(client, stack.dlq_url, stack.queue_url).run()  # type: ignore[arg-type]

    assert report.moved == 2
    assert list(report.failed.values()) == ["no"]
    assert {m["Body"] for m in _drain(stack, stack.queue_url)} == {
        _body("job-0"),
        _body("job-2"),
    }
    assert [m["Body"] for m in _drain(stack, stack.dlq_url)] == [_body("job-1")]


def test_batches_respect_the_byte_limit() -> None:
    big = "x" * 100_000
    entries: list[Any] = [{"Id": str(i), "MessageBody": big} for i in range(5)]
    entries += [{"Id": str(i), "MessageBody": "small"} for i in range(5, 20)]

    chunks = size_chunks(entries)

    assert [len(chunk) for chunk in chunks] == [2, 2, 10, 6]
    assert [e["Id"] for chunk in chunks for e in chunk] == [str(i) for i in range(20)]


class _MoveTaskSQS:
    """Just enough of SQS's message-move-task API to follow one task."""

    def __init__(self, statuses: list[dict[str, Any]]) -> None:
        self.statuses = statuses
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def start_message_move_task(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("start", kwargs))
        return {"TaskHandle": "handle-1"}

    async def list_message_move_tasks(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("list", kwargs))
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return {"Results": [status]}

    async def cancel_message_move_task(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("cancel", kwargs))
        return {}


async def test_move_task_is_followed_until_it_completes() -> None:
    sqs = _MoveTaskSQS(
        [
            {"TaskHandle": "handle-1", "Status": "RUNNING", "ApproximateNumberOfMessagesMoved": 3},
            {"Status": "COMPLETED", "ApproximateNumberOfMessagesMoved": 8},
        ]
    )
    seen: list[int] = []

    def progress(report: RedriveReport) -> None:
        seen.append(report.moved)

    redrive = MoveTaskRedrive(sqs, "arn:dlq", "arn:queue", progress, poll_s=0)  # type: ignore[arg-type]
    report = await redrive.follow(await redrive.start())

    assert sqs.calls[0] == ("start", {"SourceArn": "arn:dlq", "DestinationArn": "arn:queue"})
    assert seen == [3, 8]
    assert (report.method, report.moved, report.failed) == ("move-task", 8, {})


async def test_interrupting_a_move_task_cancels_it() -> None:
    sqs = _MoveTaskSQS([{"TaskHandle": "handle-1", "Status": "RUNNING"}])
    redrive = MoveTaskRedrive(sqs, "arn:dlq", "arn:queue", poll_s=3600)  # type: ignore[arg-type]
    task = asyncio.create_task(redrive.follow("handle-1"))
    deadline = time.monotonic() + 5
    while not any(name == "list" for name, _ in sqs.calls):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert sqs.calls[-1] == ("cancel", {"TaskHandle": "handle-1"})


def test_purge_refuses_without_yes(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    _dead_letter(stack, _body("keep-me"))

    assert cli.main(["dlq", "purge"]) == 2

    assert "--yes" in capsys.readouterr().err
    assert _visible(stack, stack.dlq_url) == 1


def test_purge_with_yes_empties_the_dlq(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    for index in range(4):
        _dead_letter(stack, _body(f"job-{index}"))

    assert cli.main(["dlq", "purge", "--yes"]) == 0

    assert capsys.readouterr().out == f"purged {stack.dlq_url}: deleted 4 message(s)\n"

    assert _drain(stack, stack.dlq_url) == []
    assert _visible(stack, stack.queue_url) == 0


class _Interleaved:
    """An SQS client that makes a redrive meet a running consumer at its worst.

    The DLQ hands out at most two messages per receive, and after each batch
    is moved the redrive waits until the consumer has dead-lettered every
    moved request again, so each next receive can bring back those copies
    (new message ids) before the originals are all moved.
    """

    def __init__(self, real: Any, dlq_url: str, full: int) -> None:
        self._real = real
        self._dlq_url = dlq_url
        self._full = full

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def receive_message(self, **kwargs: Any) -> Any:
        if kwargs["QueueUrl"] == self._dlq_url:
            kwargs["MaxNumberOfMessages"] = min(2, kwargs["MaxNumberOfMessages"])
        return await self._real.receive_message(**kwargs)

    async def delete_message_batch(self, **kwargs: Any) -> Any:
        from consumer.cli.redrive import dlq_size
        from tests.support.helpers import eventually

        response = await self._real.delete_message_batch(**kwargs)

        async def back() -> bool:
            return await dlq_size(self._real, self._dlq_url) >= self._full

        await eventually(back, within=30, what="the consumer to dead-letter them again")
        return response


def _poison(job: str) -> str:
    # Zero steps: refused by the consumer's parser, dead-lettered at once.
    return json.dumps(
        {
            "job_id": job,
            "kind": "memory",
            "user_id": "user1",
            "prompt": "x",
            "num_inference_steps": 0,
        }
    )


@pytest.mark.parametrize("crowded", [False, True], ids=["marked", "budget-only"])
async def test_redrive_ends_with_a_consumer_running(stack: Stack, crowded: bool) -> None:
    """Each poison request is moved once, by the mark or, where the mark cannot
    be added (eight attributes already), by the budget."""
    from consumer.aws.clients import client_config, make_session
    from consumer.cli.redrive import RUN_ATTRIBUTE, dlq_size
    from tests.support.helpers import running
    from tests.support.recording import blank

    extra = {f"a{i}": "x" for i in range(6)} if crowded else {}
    poison = {_poison(f"poison-{i}") for i in range(6)}
    for body in poison:
        _dead_letter(stack, body, **extra)
    # Two more, in flight elsewhere for the whole run: counted in the budget
    # (8) but never received, so only the mark can stop the marked run at 6.
    sqs_sync = stack.client("sqs")
    sqs_sync.send_message(QueueUrl=stack.dlq_url, MessageBody="held-1")
    sqs_sync.send_message(QueueUrl=stack.dlq_url, MessageBody="held-2")
    held = sqs_sync.receive_message(
        QueueUrl=stack.dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=600, WaitTimeSeconds=0
    )["Messages"]
    held_bodies = {m["Body"] for m in held}
    assert held_bodies >= {"held-1", "held-2"}
    for message in held:
        if message["Body"] not in {"held-1", "held-2"}:
            sqs_sync.change_message_visibility(
                QueueUrl=stack.dlq_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )

    session = make_session("us-east-1")
    async with running(blank()), session.client("sqs", config=client_config()) as sqs:
        assert await dlq_size(sqs, stack.dlq_url) == 8
        redrive = CopyRedrive(_Interleaved(sqs, stack.dlq_url, 8), stack.dlq_url, stack.queue_url)  # type: ignore[arg-type]
        report = await asyncio.wait_for(redrive.run(), timeout=90)

    assert report.budget == 8
    # The marked run stops at the six poison requests; the crowded one, which
    # cannot mark, stops at its budget (moving two copies a second time).
    assert report.moved == (8 if crowded else 6)
    left = _drain(stack, stack.dlq_url)
    assert {m["Body"] for m in left} == poison
    if not crowded:
        assert report.failed_again >= 1
        marks = {m["MessageAttributes"][RUN_ATTRIBUTE]["StringValue"] for m in left}
        assert marks == {redrive.run_id}
    else:
        assert all(RUN_ATTRIBUTE not in m["MessageAttributes"] for m in left)


def test_priority_selects_the_priority_queues_dlq_and_redrives_back_to_it(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sqs = stack.client("sqs")
    name = stack.queue_url.rsplit("/", 1)[1]
    dlq = sqs.create_queue(QueueName=f"{name}-pdlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]
    policy = json.dumps({"deadLetterTargetArn": arn["QueueArn"], "maxReceiveCount": "3"})
    priority = sqs.create_queue(QueueName=f"{name}-priority", Attributes={"RedrivePolicy": policy})[
        "QueueUrl"
    ]
    monkeypatch.setenv("SQS_PRIORITY_QUEUE_URL", priority)
    sqs.send_message(QueueUrl=dlq, MessageBody=_body("p-1"))
    _dead_letter(stack, _body("n-1"))  # on the request queue's DLQ: not touched

    assert cli.main(["dlq", "--priority", "list", "--json"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [item["job_id"] for item in listed] == ["p-1"]
    assert cli.main(["dlq", "--priority", "redrive", "--method", "copy"]) == 0
    assert _visible(stack, priority) == 1
    assert _visible(stack, dlq) == 0
    assert _visible(stack, stack.dlq_url) == 1
    assert _visible(stack, stack.queue_url) == 0
