"""S3 objects fetched in parallel byte ranges: resumable, pinned, verified.

Each object is fetched in ranges pinned to the ETag seen at the start
(``If-Match``), so an object replaced mid-download is never stitched
together. Finished ranges are recorded beside the partial file, so an
interrupted download continues where it stopped. A finished file is checked
against its size and, where the ETag is an MD5 (single-part uploads, or
multipart ones with a recognisable part size), against its content.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from consumer.classify import aws_error_code
from consumer.errors import ConfigError, FatalError

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = structlog.get_logger(__name__)

S3_SCHEME = "s3://"
PART_SIZE = 16 * 1024 * 1024
CONCURRENCY = 8
PART_ATTEMPTS = 3
PROGRESS_INTERVAL_S = 5.0
_READ_CHUNK = 1024 * 1024
_MiB = 1024 * 1024
# Part sizes that S3 clients commonly use for multipart uploads, tried when
# checking a multipart ETag (boto3's 8 MiB default first).
_COMMON_PART_SIZES = tuple(n * _MiB for n in (8, 5, 16, 15, 32, 64, 100, 128, 256, 512))


class ArtifactError(FatalError):
    """A model artefact could not be fetched or failed its checks."""


@dataclass(frozen=True, slots=True)
class S3Uri:
    """A bucket and a key (or key prefix)."""

    bucket: str
    key: str

    def __str__(self) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self.key}"

    def child(self, *parts: str) -> S3Uri:
        """The URI of `parts` below this one, as a key prefix."""
        return S3Uri(self.bucket, "/".join(p.strip("/") for p in (self.key, *parts) if p))


def is_s3_uri(value: str) -> bool:
    """Whether `value` names an S3 object or prefix."""
    return value.startswith(S3_SCHEME)


def parse_s3_uri(value: str) -> S3Uri:
    """Split ``s3://bucket/key`` into its parts; raise :class:`ConfigError` if malformed."""
    if not is_s3_uri(value):
        raise ConfigError(f"not an s3:// URI: {value!r}")
    bucket, _, key = value[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise ConfigError(f"s3 URI without a bucket: {value!r}")
    return S3Uri(bucket, key)


@dataclass(frozen=True, slots=True)
class RemoteObject:
    """What S3 says about one object: enough to validate a cached copy."""

    key: str
    size: int
    etag: str


@dataclass
class Progress:
    """Bytes fetched for one artefact: a bar at a terminal, else a log line now and then."""

    uri: str
    total: int
    interval_s: float
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    _last_log: float = field(default_factory=time.monotonic)
    _bar: Any = None

    def add(self, count: int) -> None:
        """Count `count` more bytes done; log or draw progress now and then."""
        self.done += count
        # The bar appears with the first bytes, so a cached artefact shows none.
        if self._bar is None and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.total, unit="B", unit_scale=True, unit_divisor=1024, desc=self.uri
            )
        if self._bar is not None:
            self._bar.update(count)
            return
        now = time.monotonic()
        if now - self._last_log >= self.interval_s:
            self._last_log = now
            log.info("artifact_download_progress", **self._figures(now))

    def close(self) -> None:
        """End the progress bar, if one was drawn."""
        if self._bar is not None:
            self._bar.close()
        if self.done:
            log.info("artifact_downloaded", **self._figures(time.monotonic()))

    def _figures(self, now: float) -> dict[str, Any]:
        elapsed = max(now - self.started, 1e-9)
        return {
            "uri": self.uri,
            "bytes_done": self.done,
            "bytes_total": self.total,
            "percent": round(100.0 * self.done / self.total, 1) if self.total else 100.0,
            "mib_per_s": round(self.done / elapsed / _MiB, 1),
            "seconds": round(elapsed, 1),
        }


@dataclass
class _Fetched:
    parts: int = 0
    bytes: int = 0


class Download:
    """One object fetched in ranged parts into a partial file, resumably."""

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        remote: RemoteObject,
        partial: Path,
        part_size: int,
        limit: asyncio.Semaphore,
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._remote = remote
        self._partial = partial
        self._state_path = partial.with_name(partial.name + ".state.json")
        self._part_size = part_size
        self._limit = limit
        self._done: set[int] = set()

    async def run(self, progress: Progress) -> _Fetched:
        """Fetch the parts not yet done; what this run downloaded."""
        self._done = self._resume()
        count = max(1, math.ceil(self._remote.size / self._part_size))
        missing = [i for i in range(count) if i not in self._done]
        if self._done:
            log.info("artifact_download_resumed", key=self._remote.key, parts_done=len(self._done))
            progress.add(self._remote.size - sum(self._part_length(i) for i in missing))
        fetched = _Fetched()
        fd = os.open(self._partial, os.O_RDWR)
        try:
            await run_all(self._part(fd, index, progress, fetched) for index in missing)
        finally:
            os.close(fd)
        return fetched

    def forget(self) -> None:
        """Drop the recorded progress (the next run starts afresh)."""
        self._state_path.unlink(missing_ok=True)

    def _resume(self) -> set[int]:
        state = read_json(self._state_path)
        same = (
            state.get("etag") == self._remote.etag
            and state.get("size") == self._remote.size
            and state.get("part_size") == self._part_size
            and self._partial.is_file()
            and self._partial.stat().st_size == self._remote.size
        )
        if same:
            return {int(i) for i in state.get("done", [])}
        self._partial.parent.mkdir(parents=True, exist_ok=True)
        with self._partial.open("wb") as handle:
            handle.truncate(self._remote.size)
        self._save_state()
        return set()

    def _part_length(self, index: int) -> int:
        start = index * self._part_size
        return max(0, min(self._part_size, self._remote.size - start))

    async def _part(self, fd: int, index: int, progress: Progress, fetched: _Fetched) -> None:
        length = self._part_length(index)
        if length:
            for attempt in range(1, PART_ATTEMPTS + 1):
                try:
                    async with self._limit:
                        await self._fetch_range(fd, index, length, progress)
                    break
                except ClientError as error:
                    raise self._client_failure(error) from error
                except (BotoCoreError, OSError, TimeoutError) as error:
                    if attempt == PART_ATTEMPTS:
                        raise ArtifactError(
                            f"part {index} of {self._remote.key} failed {attempt} times: {error}"
                        ) from error
                    log.warning("artifact_part_retry", key=self._remote.key, part=index)
            fetched.parts += 1
            fetched.bytes += length
            # The part's bytes reach the disk before the state names it done.
            # On the loop, not a thread: a cancellation between the two
            # would lose a finished part from the state.
            os.fsync(fd)
        self._done.add(index)
        self._save_state()

    async def _fetch_range(self, fd: int, index: int, length: int, progress: Progress) -> None:
        start = index * self._part_size
        response = await self._client.get_object(
            Bucket=self._bucket,
            Key=self._remote.key,
            Range=f"bytes={start}-{start + length - 1}",
            IfMatch=self._remote.etag,
        )
        offset = start
        stream = response["Body"]
        async with stream:
            async for chunk in stream.iter_chunks(_READ_CHUNK):
                os.pwrite(fd, chunk, offset)
                offset += len(chunk)
                progress.add(len(chunk))
        if offset != start + length:
            raise OSError(f"range of {length} bytes ended after {offset - start}")

    def _client_failure(self, error: ClientError) -> ArtifactError:
        code = aws_error_code(error)
        if code in ("PreconditionFailed", "412"):
            # The object changed since it was listed; start afresh next time.
            self.forget()
            return ArtifactError(f"{self._remote.key} changed while downloading; start again")
        return ArtifactError(f"cannot download {self._remote.key}: {error}")

    def _save_state(self) -> None:
        write_json(
            self._state_path,
            {
                "etag": self._remote.etag,
                "size": self._remote.size,
                "part_size": self._part_size,
                "done": sorted(self._done),
            },
        )


def verify(path: Path, remote: RemoteObject) -> None:
    """Raise :class:`ArtifactError` unless `path` has the object's size and MD5."""
    size = path.stat().st_size
    if size != remote.size:
        path.unlink(missing_ok=True)
        raise ArtifactError(f"{remote.key}: got {size} bytes, expected {remote.size}")
    if etag_matches(path, remote.etag) is False:
        path.unlink(missing_ok=True)
        raise ArtifactError(f"{remote.key}: content does not match its ETag {remote.etag}")


def etag_matches(path: Path, etag: str) -> bool | None:
    """Whether the file's MD5 fits `etag`; ``None`` when the ETag is not an MD5.

    An MD5 with a part count that is not a positive number is malformed:
    :class:`ArtifactError`.

    A single-part ETag is the MD5 of the content; a multipart one is the MD5
    of the parts' MD5s with ``-<parts>``, checkable only by guessing the part
    size, so the sizes clients commonly use are tried.
    """
    value = etag.strip('"')
    digest, _, count = value.partition("-")
    if len(digest) != 32 or not all(c in "0123456789abcdef" for c in digest.lower()):
        return None
    if not count:
        return _md5_parts(path, None) == digest
    if not count.isdigit() or int(count) < 1:
        raise ArtifactError(f"{path.name}: malformed ETag {etag!r}")
    parts = int(count)
    size = path.stat().st_size
    rounded = math.ceil(size / parts / _MiB) * _MiB if parts else 0
    for part_size in dict.fromkeys((*_COMMON_PART_SIZES, rounded)):
        fits = part_size and math.ceil(size / part_size) == parts
        if fits and _md5_parts(path, part_size) == digest:
            return True
    # No common part size reproduces the ETag: it cannot be checked, which
    # is not proof of corruption (the size and If-Match still held).
    return None


def _md5_parts(path: Path, part_size: int | None) -> str:
    """The MD5 of the file, or with `part_size` the MD5 of its parts' MD5s."""
    outer = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while block := handle.read(part_size or 8 * _MiB):
            if part_size is None:
                outer.update(block)
            else:
                outer.update(hashlib.md5(block, usedforsecurity=False).digest())
    return outer.hexdigest()


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; empty when missing or unreadable."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def write_json(path: Path, value: dict[str, Any]) -> None:
    """Write `value` to `path` atomically and durably.

    A scratch file, synced, then renamed over `path`, then the folder synced:
    after a power loss the state names only parts whose bytes were written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(path.name + ".tmp")
    with scratch.open("w") as handle:
        handle.write(json.dumps(value))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(scratch, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


async def run_all(jobs: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run `jobs` concurrently; on a failure cancel the rest and raise the first error.

    The first error itself, not the task group's ExceptionGroup, so callers
    see the ConfigError or ArtifactError that says what went wrong.
    """
    try:
        async with asyncio.TaskGroup() as group:
            for job in jobs:
                group.create_task(job)
    except ExceptionGroup as failures:
        raise failures.exceptions[0] from failures
