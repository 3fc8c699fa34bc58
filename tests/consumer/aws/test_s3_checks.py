"""The checks on what comes from S3: pinned ranges, ETags, byte caps, durable state."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from consumer.aws import s3_download
from consumer.aws.artifact_cache import ArtifactCache
from consumer.aws.clients import open_clients
from consumer.aws.s3_download import ArtifactError, Download, etag_matches, parse_s3_uri
from consumer.aws.storage import Storage
from consumer.cli.local_aws import REGION
from consumer.errors import InputNotFound
from pipeline.api.errors import InvalidImageError
from tests.support.aws import Stack
from tests.support.downloads import on_part

KiB = 1024


async def test_an_object_changed_between_parts_is_refused(stack: Stack, tmp_path: Path) -> None:
    key = "weights/changing.safetensors"
    uri = stack.put(key, os.urandom(3 * 64 * KiB))

    def replaced(fd: int) -> None:  # another upload of the same size lands mid-download
        stack.put(key, os.urandom(3 * 64 * KiB))

    cache = ArtifactCache(tmp_path, part_size=64 * KiB, concurrency=1)
    # The ranges are pinned to the first ETag (If-Match): S3 refuses the rest.
    with on_part(1, replaced), pytest.raises(ArtifactError, match="changed while downloading"):
        await cache.fetch_file(uri)
    assert not cache.local_path(parse_s3_uri(uri)).exists()


async def test_content_that_does_not_match_its_etag_is_refused(
    stack: Stack, tmp_path: Path
) -> None:
    uri = stack.put("weights/flipped.safetensors", os.urandom(2 * 64 * KiB))

    def flipped(fd: int) -> None:  # a disk or network fault: same size, one byte wrong
        os.pwrite(fd, bytes([os.pread(fd, 1, 0)[0] ^ 0xFF]), 0)

    cache = ArtifactCache(tmp_path, part_size=64 * KiB, concurrency=1)
    with (
        on_part(0, flipped, after=True),
        pytest.raises(ArtifactError, match="does not match its ETag"),
    ):
        await cache.fetch_file(uri)
    assert not cache.local_path(parse_s3_uri(uri)).exists()


def test_a_malformed_etag_is_an_artifact_error(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"content")
    for etag in (f'"{"a" * 32}-x"', f'"{"a" * 32}-0"', f'"{"a" * 32}--1"'):
        with pytest.raises(ArtifactError, match="malformed ETag"):
            etag_matches(path, etag)


def test_the_state_file_and_its_folder_are_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []
    real = os.fsync

    def record(fd: int) -> None:
        synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real(fd)

    monkeypatch.setattr(s3_download.os, "fsync", record)
    state = tmp_path / "deep" / "part.state.json"
    s3_download.write_json(state, {"done": [0]})
    # The content before the rename, the folder's entry after it.
    assert synced == [state.with_name(state.name + ".tmp"), state.parent]
    assert s3_download.read_json(state) == {"done": [0]}


async def test_each_part_is_synced_before_the_state_names_it(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = stack.put("weights/synced.safetensors", os.urandom(2 * 64 * KiB))
    order: list[str] = []
    real_fsync, real_save = os.fsync, Download._save_state

    def record(fd: int) -> None:
        if Path(os.readlink(f"/proc/self/fd/{fd}")).name == "synced.safetensors":
            order.append("part")  # the partial file, not the state
        real_fsync(fd)

    def save(self: Download) -> None:
        order.append(f"state{len(self._done)}")
        real_save(self)

    monkeypatch.setattr(s3_download.os, "fsync", record)
    monkeypatch.setattr(Download, "_save_state", save)
    await ArtifactCache(tmp_path, part_size=64 * KiB, concurrency=1).fetch_file(uri)
    assert order == ["state0", "part", "state1", "part", "state2"]


class _Unannounced:
    """An S3 client whose GetObject answers carry no Content-Length."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def get_object(self, **kwargs: Any) -> Any:
        response = await self._inner.get_object(**kwargs)
        response.pop("ContentLength", None)
        return response


async def test_inputs_over_the_cap_are_refused_before_and_while_reading(stack: Stack) -> None:
    stack.put("avatars/big.png", os.urandom(10 * KiB))
    async with open_clients(REGION) as clients:
        announced = Storage(clients.s3, stack.bucket)
        with pytest.raises(InvalidImageError, match="is 10240 bytes; the limit is 4096"):
            await announced.fetch_first(["avatars/big.png"], 4 * KiB)
        unannounced = Storage(_Unannounced(clients.s3), stack.bucket)  # type: ignore[arg-type]
        with pytest.raises(InvalidImageError, match="over the limit of 4096 bytes"):
            await unannounced.fetch_first(["avatars/big.png"], 4 * KiB)
        # At the cap itself, it is read whole.
        key, data = await announced.fetch_first(["avatars/big.png"], 10 * KiB)
    assert (key, len(data)) == ("avatars/big.png", 10 * KiB)


class _WithoutListBucket:
    """The client as S3 answers a role without s3:ListBucket: 403 for a missing key."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def _call(self, name: str, **kwargs: Any) -> Any:
        try:
            return await getattr(self._inner, name)(**kwargs)
        except ClientError as error:
            if error.response["Error"]["Code"] not in ("404", "NoSuchKey"):
                raise
            denied = {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}
            raise ClientError(denied, name) from error  # type: ignore[arg-type]

    async def head_object(self, **kwargs: Any) -> Any:
        return await self._call("head_object", **kwargs)

    async def get_object(self, **kwargs: Any) -> Any:
        return await self._call("get_object", **kwargs)


async def test_a_missing_key_answered_with_403_reads_as_missing(stack: Stack) -> None:
    stack.put("avatars/u1.jpg", b"picture")
    async with open_clients(REGION) as clients:
        storage = Storage(_WithoutListBucket(clients.s3), stack.bucket)  # type: ignore[arg-type]
        assert await storage.head("generated/u1/memory_j.png") is None
        key, data = await storage.fetch_first(["avatars/u1.png", "avatars/u1.jpg"], KiB)
        assert (key, data) == ("avatars/u1.jpg", b"picture")
        with pytest.raises(InputNotFound):
            await storage.fetch_first(["avatars/u2.png"], KiB)
