"""A local cache of S3 objects and folders, downloaded once.

Objects are fetched by :mod:`consumer.aws.s3_download`. On the next start a
cached file whose size and ETag still match the object's metadata (one HEAD,
or one listing for a folder) is used without downloading. Processes sharing a
cache (one per GPU) take a file lock per artefact.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from consumer.aws.clients import client_config, make_session
from consumer.aws.model_files import select_model_files
from consumer.aws.s3_download import (
    CONCURRENCY,
    PART_SIZE,
    PROGRESS_INTERVAL_S,
    ArtifactError,
    Download,
    Progress,
    RemoteObject,
    S3Uri,
    parse_s3_uri,
    read_json,
    run_all,
    verify,
    write_json,
)
from consumer.classify import aws_error_code
from consumer.errors import ConfigError

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = structlog.get_logger(__name__)


@dataclass
class CacheStats:
    """What the cache did, for logs and tests."""

    objects_reused: int = 0
    objects_downloaded: int = 0
    bytes_downloaded: int = 0
    parts_downloaded: int = 0


ClientFactory = Callable[[], contextlib.AbstractAsyncContextManager["S3Client"]]


class ArtifactCache:
    """S3 objects and folders mirrored under `root`, downloaded once.

    Layout: ``<root>/s3/<bucket>/<key>`` holds finished files (a folder keeps
    its structure, so diffusers can read it); ``<root>/.partial`` holds
    unfinished downloads with their progress; ``<root>/.meta`` the size and
    ETag of each finished file.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        region: str = "us-east-1",
        client_factory: ClientFactory | None = None,
        part_size: int = PART_SIZE,
        concurrency: int = CONCURRENCY,
        progress_interval_s: float = PROGRESS_INTERVAL_S,
    ) -> None:
        self.root = Path(root)
        self.stats = CacheStats()
        self._client_factory = client_factory or _default_client_factory(region)
        self._part_size = part_size
        self._limit = asyncio.Semaphore(concurrency)
        self._interval = progress_interval_s

    def local_path(self, uri: S3Uri) -> Path:
        """Where `uri` lies in the cache; never outside it."""
        return _inside(self.root / "s3", uri.bucket, uri.key)

    async def fetch_file(self, uri: str) -> Path:
        """The local copy of one object, downloaded if missing or stale."""
        location = parse_s3_uri(uri)
        async with self._client_factory() as client, self._artifact_lock(location):
            remote = await _head(client, location)
            progress = Progress(uri, remote.size, self._interval)
            try:
                await self._ensure(client, location.bucket, remote, progress)
            finally:
                progress.close()
        return self.local_path(location)

    async def fetch_folder(self, uri: str, *, fp16_variant: bool = False) -> Path:
        """The local copy of a model folder under a prefix: only the files a
        load reads (:mod:`consumer.aws.model_files`), the ``fp16`` variant's
        weights where there is one and `fp16_variant` is set."""
        location = parse_s3_uri(uri)
        prefix = location.key.rstrip("/") + "/" if location.key else ""
        folder = S3Uri(location.bucket, prefix)
        async with self._client_factory() as client, self._artifact_lock(folder):
            listed = await _list(client, folder)
            if not listed:
                raise ConfigError(f"no objects under {uri}")
            for item in listed:
                # An unsafe key is refused even where it would be skipped.
                self.local_path(S3Uri(folder.bucket, item.key))
            selection = select_model_files(listed, prefix, fp16_variant=fp16_variant)
            objects = selection.kept
            if not any(o.key.endswith(".safetensors") for o in objects):
                raise ConfigError(
                    f"no safetensors weights under {uri} in the names diffusers or "
                    "transformers load (diffusion_pytorch_model*, model*)"
                )
            if selection.skipped:
                log.info(
                    "artifact_files_skipped",
                    uri=uri,
                    files=len(selection.skipped),
                    bytes=selection.skipped_bytes,
                )
            progress = Progress(uri, sum(o.size for o in objects), self._interval)
            try:
                await run_all(self._ensure(client, folder.bucket, o, progress) for o in objects)
            finally:
                progress.close()
        local = self.local_path(folder)
        _prune(local, {self.local_path(S3Uri(folder.bucket, o.key)) for o in objects})
        return local

    @contextlib.asynccontextmanager
    async def _artifact_lock(self, uri: S3Uri) -> AsyncIterator[None]:
        name = hashlib.sha256(str(uri).encode()).hexdigest()[:32]
        path = self.root / ".locks" / f"{name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            # Blocking wait for another process's download, off the event loop.
            await asyncio.to_thread(fcntl.flock, handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    async def _ensure(
        self, client: S3Client, bucket: str, remote: RemoteObject, progress: Progress
    ) -> None:
        target = self.local_path(S3Uri(bucket, remote.key))
        meta = _inside(self.root / ".meta", bucket, remote.key + ".json")
        if _is_current(target, meta, remote):
            self.stats.objects_reused += 1
            return
        partial = _inside(self.root / ".partial", bucket, remote.key)
        download = Download(client, bucket, remote, partial, self._part_size, self._limit)
        fetched = await download.run(progress)
        self.stats.parts_downloaded += fetched.parts
        self.stats.bytes_downloaded += fetched.bytes
        await asyncio.to_thread(verify, partial, remote)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, target)
        download.forget()
        write_json(meta, {"etag": remote.etag, "size": remote.size})
        self.stats.objects_downloaded += 1


def _default_client_factory(region: str) -> ClientFactory:
    session = make_session(region)

    def factory() -> contextlib.AbstractAsyncContextManager[S3Client]:
        # Large ranged reads: allow a slow part more time than an API call.
        return session.client("s3", config=client_config(read_timeout=120.0))

    return factory


async def _head(client: S3Client, uri: S3Uri) -> RemoteObject:
    try:
        head = await client.head_object(Bucket=uri.bucket, Key=uri.key)
    except ClientError as error:
        code = aws_error_code(error)
        if code in ("404", "NoSuchKey", "NotFound"):
            raise ConfigError(f"{uri} does not exist") from error
        raise ArtifactError(f"cannot read {uri}: {error}") from error
    except BotoCoreError as error:
        raise ArtifactError(f"cannot reach S3 for {uri}: {error}") from error
    return RemoteObject(uri.key, int(head["ContentLength"]), head["ETag"])


async def _list(client: S3Client, prefix: S3Uri) -> list[RemoteObject]:
    found = []
    paginator = client.get_paginator("list_objects_v2")
    try:
        async for page in paginator.paginate(Bucket=prefix.bucket, Prefix=prefix.key):
            for item in page.get("Contents", []):
                key = item["Key"]
                if not key.endswith("/"):  # folder placeholders hold nothing
                    found.append(RemoteObject(key, int(item["Size"]), item["ETag"]))
    except (ClientError, BotoCoreError) as error:
        raise ArtifactError(f"cannot list {prefix}: {error}") from error
    return found


def _inside(root: Path, bucket: str, key: str) -> Path:
    """`root`/`bucket`/`key`, refusing keys that would climb out of `root`."""
    parts = PurePosixPath(key).parts
    if not parts or any(p in ("..", ".", "") for p in parts) or key.startswith("/"):
        raise ArtifactError(f"refusing unsafe S3 key {key!r}")
    return root.joinpath(bucket, *parts)


def _is_current(target: Path, meta: Path, remote: RemoteObject) -> bool:
    if not target.is_file() or target.stat().st_size != remote.size:
        return False
    saved = read_json(meta)
    return saved.get("etag") == remote.etag and saved.get("size") == remote.size


def _prune(folder: Path, keep: set[Path]) -> None:
    """Remove files the S3 folder no longer has, so stale weights are never read."""
    for path in folder.rglob("*"):
        if path.is_file() and path not in keep:
            log.info("artifact_stale_file_removed", path=str(path))
            path.unlink()
