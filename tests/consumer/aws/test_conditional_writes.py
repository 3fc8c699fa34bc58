"""Outputs are written only where no object is: S3 conditional writes, on moto's S3.

moto's server honours ``If-None-Match: *`` on PutObject (it answers 412
PreconditionFailed when the key is taken), so the rule is tested at the
wire. It never answers 409 ConditionalRequestConflict, which AWS gives to a
conditional write racing another on the same key; that retry is tested
against a client that answers it.
"""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from consumer.aws.clients import open_clients
from consumer.aws.storage import CONFLICT_ATTEMPTS, Storage
from consumer.cli.local_aws import REGION
from tests.support.aws import Stack


async def test_a_second_write_to_a_key_is_refused_and_the_first_object_stays(
    stack: Stack,
) -> None:
    key = "generated/u1/memory_j.png"
    async with open_clients(REGION) as clients:
        storage = Storage(clients.s3, stack.bucket)
        assert await storage.put_png(key, b"first", {"seed": "1"}) is True
        assert await storage.put_png(key, b"second", {"seed": "2"}) is False
        assert await storage.head(key) == {"seed": "1"}
    body = stack.client("s3").get_object(Bucket=stack.bucket, Key=key)["Body"].read()
    assert body == b"first"


class _Racing:
    """An S3 client that answers the first `conflicts` writes with 409, then 412."""

    def __init__(self, conflicts: int) -> None:
        self.conflicts = conflicts
        self.calls: list[dict[str, Any]] = []

    async def put_object(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        code, status = (
            ("ConditionalRequestConflict", 409)
            if len(self.calls) <= self.conflicts
            else ("PreconditionFailed", 412)
        )
        raise ClientError(
            {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject"
        )


async def test_a_write_racing_another_is_tried_again_and_then_finds_the_winner() -> None:
    racing = _Racing(conflicts=1)
    storage = Storage(racing, "bucket")  # type: ignore[arg-type]

    assert await storage.put_png("k", b"png", {}) is False

    assert len(racing.calls) == 2
    assert all(call["IfNoneMatch"] == "*" for call in racing.calls)


async def test_a_write_that_keeps_racing_gives_up_with_the_error() -> None:
    racing = _Racing(conflicts=CONFLICT_ATTEMPTS)
    storage = Storage(racing, "bucket")  # type: ignore[arg-type]

    with pytest.raises(ClientError) as raised:
        await storage.put_png("k", b"png", {})

    assert raised.value.response["Error"]["Code"] == "ConditionalRequestConflict"
    assert len(racing.calls) == CONFLICT_ATTEMPTS
