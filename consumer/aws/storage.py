"""The bucket (S3): does an output exist, fetch an input, write an output if absent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from consumer.classify import aws_error_code
from consumer.errors import InputNotFound
from pipeline.api.errors import InvalidImageError

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

PNG = "image/png"
CHUNK_BYTES = 256 * 1024
# S3 answers 403 for a missing key to a caller without s3:ListBucket on the
# bucket, which the deployed worker role has only for the model folders (so
# users' inputs cannot be listed). The role may read every key this class
# asks for, so here a 403 means "not there".
_MISSING = frozenset({"404", "NoSuchKey", "NotFound", "403", "AccessDenied", "Forbidden"})

# A conditional write (If-None-Match: *) refused because the key is taken,
# and one that raced another conditional write on the key (retry it).
_TAKEN = frozenset({"PreconditionFailed", "412"})
_RACING = frozenset({"ConditionalRequestConflict", "409"})
CONFLICT_ATTEMPTS = 3


def _missing(error: ClientError) -> bool:
    return aws_error_code(error) in _MISSING


def ascii_metadata(values: dict[str, str]) -> dict[str, str]:
    """User metadata travels in HTTP headers, which take ASCII only."""
    return {k: v.encode("ascii", "replace").decode("ascii") for k, v in values.items()}


class Storage:
    """The bucket `bucket`, through an aioboto3 S3 client.

    A missing key reads as "not found", whether S3 says 404 or, to a role
    with ``s3:GetObject`` on the prefix but no ``s3:ListBucket``, 403. A role
    that lacks ``s3:GetObject`` on the input prefixes therefore makes every
    input read as missing (``input_not_found``, redrivable once fixed).
    """

    def __init__(self, s3: S3Client, bucket: str) -> None:
        self.s3 = s3
        self.bucket = bucket

    async def head(self, key: str) -> dict[str, str] | None:
        """The object's user metadata if `key` exists, else ``None``."""
        try:
            response = await self.s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if _missing(error):
                return None
            raise
        return dict(response.get("Metadata", {}))

    async def exists(self, key: str) -> bool:
        """Whether an object is at `key` (a HEAD): 404, or 403 without
        ``s3:ListBucket``, reads as absent; any other failure raises."""
        try:
            await self.s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if _missing(error):
                return False
            raise
        return True

    async def fetch_first(self, keys: Sequence[str], max_bytes: int) -> tuple[str, bytes]:
        """The first of `keys` that exists, and its bytes.

        Raises :class:`InputNotFound` when none exists, :class:`InvalidImageError`
        when the object is larger than `max_bytes` (checked before reading it,
        and again while reading in case the length was not announced).
        """
        for key in keys:
            try:
                response = await self.s3.get_object(Bucket=self.bucket, Key=key)
            except ClientError as error:
                if _missing(error):
                    continue
                raise
            body = response["Body"]
            async with body:
                size = response.get("ContentLength", 0)
                if size > max_bytes:
                    raise InvalidImageError(
                        f"input {key} is {size} bytes; the limit is {max_bytes}"
                    )
                data = bytearray()
                async for chunk in body.iter_chunks(CHUNK_BYTES):
                    data += chunk
                    if len(data) > max_bytes:
                        raise InvalidImageError(
                            f"input {key} is over the limit of {max_bytes} bytes"
                        )
            return key, bytes(data)
        raise InputNotFound(f"no input image found; tried {', '.join(keys)}")

    async def put_png(self, key: str, data: bytes, metadata: dict[str, str]) -> bool:
        """Write a PNG with ``ContentType: image/png`` and user metadata, only
        if no object is at `key` (an S3 conditional write, ``If-None-Match: *``).

        Returns ``True`` when this call wrote it, ``False`` when an object was
        there already (S3's 412): nothing is ever overwritten. S3's 409, a
        conditional write racing another on the same key, is tried again, as
        AWS advises; the retry then finds the other's object.
        """
        attempt = 1
        while True:
            try:
                await self.s3.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=data,
                    ContentType=PNG,
                    Metadata=ascii_metadata(metadata),
                    IfNoneMatch="*",
                )
            except ClientError as error:
                code = aws_error_code(error)
                if code in _TAKEN:
                    return False
                if code not in _RACING or attempt >= CONFLICT_ATTEMPTS:
                    raise
                attempt += 1
                continue
            return True
