"""`illustrator cancel` against moto: the marker where workers look for it."""

from __future__ import annotations

import pytest

from consumer.cli import main as cli
from tests.support.aws import Stack


def _marker(stack: Stack, key: str) -> int | None:
    s3 = stack.client("s3")
    listed = s3.list_objects_v2(Bucket=stack.bucket, Prefix=key)
    sizes = [item["Size"] for item in listed.get("Contents", []) if item["Key"] == key]
    return sizes[0] if sizes else None


def test_cancel_writes_the_marker(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["cancel", "job-7", "--user", "user1"]) == 0
    assert _marker(stack, "cancellations/user1/job-7") == 0
    assert f"s3://{stack.bucket}/cancellations/user1/job-7" in capsys.readouterr().err


def test_cancel_follows_the_prefix_setting(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3_CANCEL_PREFIX", "stop/")
    assert cli.main(["cancel", "job-8", "--user", "user1", "--priority"]) == 0
    assert _marker(stack, "stop/user1/job-8") == 0


@pytest.mark.parametrize(
    "argv",
    [["cancel", "../job", "--user", "user1"], ["cancel", "job-9", "--user", "a/b"]],
)
def test_cancel_refuses_ids_no_request_could_carry(
    stack: Stack, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    assert "must be 1 to 128 of" in capsys.readouterr().err
    listed = stack.client("s3").list_objects_v2(Bucket=stack.bucket)
    assert listed.get("KeyCount", 0) == 0
