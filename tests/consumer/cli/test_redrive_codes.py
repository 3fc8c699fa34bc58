"""`illustrator dlq redrive` chooses by error code, against moto's SQS.

By default it leaves the codes that cannot succeed unchanged and says how
many it left, by code; ``--code``, ``--except-code`` and ``--all`` say
otherwise. moto has no move task, so every run here copies: the rules are
those of a copy, which is also what a run that chooses by code uses on AWS.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from consumer.cli import main as cli
from tests.support.aws import Stack

# Two of each code a request can be dead-lettered with, and two without one
# (SQS's own RedrivePolicy moves a request with no attributes added).
CODES = (
    "invalid_request",
    "invalid_input",
    "too_large",
    "crashed_worker",
    "content_filtered",
    "input_not_found",
    "unauthorized",
    "generation_failed",
    "internal_error",
    None,
)
UNCHANGEABLE = {
    "invalid_request",
    "invalid_input",
    "too_large",
    "crashed_worker",
    "content_filtered",
}


def _fill(stack: Stack) -> None:
    sqs = stack.client("sqs")
    for code in CODES:
        for copy in range(2):
            body = json.dumps({"job_id": f"{code or 'none'}-{copy}", "kind": "memory"})
            attributes: dict[str, Any] = {}
            if code is not None:
                attributes = {
                    "error_code": {"DataType": "String", "StringValue": code},
                    "error_message": {"DataType": "String", "StringValue": "why"},
                }
            sqs.send_message(QueueUrl=stack.dlq_url, MessageBody=body, MessageAttributes=attributes)


def _codes(stack: Stack, url: str) -> Counter[str]:
    """The codes (from the job ids) of every message on `url`, taken off it."""
    sqs = stack.client("sqs")
    found: Counter[str] = Counter()
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
        "Messages", []
    ):
        for message in batch:
            found[json.loads(message["Body"])["job_id"].rsplit("-", 1)[0]] += 1
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return found


def _two_each(codes: set[str]) -> Counter[str]:
    return Counter({code: 2 for code in codes})


ALL = {code or "none" for code in CODES}


def test_a_redrive_leaves_the_codes_that_cannot_succeed_unchanged(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(stack)

    assert cli.main(["dlq", "redrive"]) == 0

    captured = capsys.readouterr()
    out = captured.out
    # A move task cannot choose: none was even tried.
    assert "StartMessageMoveTask" not in captured.err
    assert f"redrive (copy): moved 10 message(s) to {stack.queue_url}" in out
    left = "content_filtered 2, crashed_worker 2, invalid_input 2, invalid_request 2, too_large 2"
    assert f"left 10 message(s) in the DLQ: {left} (they cannot succeed unchanged" in out
    assert _codes(stack, stack.queue_url) == _two_each(ALL - UNCHANGEABLE)
    # Left visible at once, not hidden until the run's receive timeout.
    assert _codes(stack, stack.dlq_url) == _two_each(UNCHANGEABLE)


def test_the_copy_method_follows_the_same_rules(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(stack)

    assert cli.main(["dlq", "redrive", "--method", "copy", "--max", "3"]) == 0

    out = capsys.readouterr().out
    assert "redrive (copy): moved 3 message(s)" in out
    moved = _codes(stack, stack.queue_url)
    assert sum(moved.values()) == 3
    assert not set(moved) & UNCHANGEABLE
    assert not set(_codes(stack, stack.dlq_url)) - ALL


def test_code_moves_only_the_codes_named(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    _fill(stack)

    assert cli.main(["dlq", "redrive", "--code", "too_large", "--code", "none"]) == 0

    out = capsys.readouterr().out
    assert "moved 4 message(s)" in out
    assert "left 16 message(s)" in out
    assert "(not chosen by --code/--except-code)" in out
    assert _codes(stack, stack.queue_url) == _two_each({"too_large", "none"})
    assert _codes(stack, stack.dlq_url) == _two_each(ALL - {"too_large", "none"})


def test_except_code_moves_every_other_code(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(stack)

    assert cli.main(["dlq", "redrive", "--except-code", "invalid_request"]) == 0

    assert "left 2 message(s) in the DLQ: invalid_request 2" in capsys.readouterr().out
    assert _codes(stack, stack.queue_url) == _two_each(ALL - {"invalid_request"})
    assert _codes(stack, stack.dlq_url) == _two_each({"invalid_request"})


def test_all_moves_everything(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    _fill(stack)

    assert cli.main(["dlq", "redrive", "--all"]) == 0

    captured = capsys.readouterr()
    assert "moving by copy" in captured.err  # moto has no move task
    assert "moved 20 message(s)" in captured.out
    assert "left" not in captured.out
    assert _codes(stack, stack.queue_url) == _two_each(ALL)
    assert _codes(stack, stack.dlq_url) == Counter()


def test_a_move_task_cannot_choose_by_code(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(stack)

    assert cli.main(["dlq", "redrive", "--method", "move-task"]) == 2

    assert "a move task moves every message; add --all" in capsys.readouterr().err
    assert _codes(stack, stack.queue_url) == Counter()


@pytest.mark.parametrize(
    "arguments",
    [["--code", "no_such_code"], ["--all", "--code", "too_large"], ["--code", "x", "--all"]],
)
def test_unknown_codes_and_mixed_rules_are_usage_errors(arguments: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["dlq", "redrive", *arguments])
    assert exited.value.code == 2
