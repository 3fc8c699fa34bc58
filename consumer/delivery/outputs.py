"""A job's pictures in S3: found before drawing, written by the first writer only.

Outputs are written only where no object is (S3 conditional writes), so no
object is ever overwritten; which delivery's pictures make up a batch is
decided by its picture 0:

1. Picture 0 is written first, alone. The others are written only after it,
   each only where absent, by a delivery whose pictures were drawn with the
   same request seed as picture 0's (its ``request-seed`` metadata).
2. A delivery that finds picture 0 written already reads its metadata:

   * another ``request-digest`` (or, at a key shared with the earlier key
     scheme, another job's picture): the job id was already used for a
     different request, a permanent ``invalid_request``;
   * the same digest and request seed: the pictures are the ones it drew
     (up to floating-point effects), and it goes on writing the rest;
   * the same digest but another request seed (two deliveries of a request
     without a seed drew different ones): it writes nothing, waits up to
     :data:`WINNER_WAIT_S` for the winner's batch to be whole and reports it
     reused; still not whole, its request is released at no cost
     (:class:`BatchUnfinished`).
3. A delivery that finds picture 0 but not every other picture draws the
   batch with picture 0's request seed and writes what is missing.

So two deliveries racing never mix their pictures, whichever wins which
write. Pictures written under the earlier keys (``<kind>_<job_id>_<i>.png``,
see :func:`consumer.contract.keys.earlier_output_key`) are found when their
``job-id`` metadata names the job.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from PIL import Image

from consumer.aws.storage import Storage
from consumer.contract.keys import earlier_output_key, output_keys
from consumer.contract.request import Request, request_digest
from consumer.delivery.holding import Hold
from consumer.delivery.job import META_DIGEST, META_JOB_ID, META_REQUEST_SEED, META_SEED, encode_png
from consumer.delivery.outage import Service
from consumer.errors import InvalidRequest, TransientError
from consumer.settings import GenerationDefaults
from pipeline.api.spec import GenerationSpec

log = structlog.get_logger(__name__)

WINNER_WAIT_S = 20.0
"""How long a delivery that lost picture 0 waits for the winner's other pictures."""
WINNER_POLL_S = 0.25

Metadata = dict[str, str]


class BatchUnfinished(TransientError):
    """Another delivery won picture 0 and its batch is not whole yet: release
    the request at no cost; its next delivery completes the batch."""


@dataclass(frozen=True, slots=True)
class Batch:
    """A job's pictures as they stand in S3: each one's key and metadata (``None``: absent)."""

    keys: list[str]
    metadata: list[Metadata | None]

    @property
    def whole(self) -> bool:
        """Every picture is written."""
        return all(m is not None for m in self.metadata)

    @property
    def started(self) -> bool:
        """Picture 0, which decides the batch, is written."""
        return self.metadata[0] is not None

    def request_seed(self) -> int | None:
        """The request seed the batch was drawn with, from picture 0."""
        return _number(_request_seed(self.metadata[0] or {}))

    def seeds(self) -> list[int | None]:
        """Each picture's own seed (a redrawn picture's redraw seed)."""
        return [_number((m or {}).get(META_SEED)) for m in self.metadata]


class Outputs:
    """The `count` outputs of one request: where they go, what is there, writing them."""

    def __init__(
        self, storage: Storage, defaults: GenerationDefaults, request: Request, count: int
    ) -> None:
        self.storage = storage
        self.job_id = request.job_id
        self.digest = request_digest(request)
        self.keys = output_keys(defaults, request.user_id, request.kind, request.job_id, count)
        self.earlier = [
            earlier_output_key(defaults, request.user_id, request.kind, request.job_id, i)
            for i in range(1, count)
        ]

    async def find(self) -> Batch:
        """What is written already; raises :class:`InvalidRequest` for another request's."""
        found = list(await asyncio.gather(*(self.storage.head(key) for key in self.keys)))
        keys = list(self.keys)
        if found[0] is not None:
            # Only a started batch can have pictures under the earlier keys
            # worth finding: earlier releases wrote picture 0 with the rest.
            for index in [i for i in range(1, len(keys)) if found[i] is None]:
                earlier = await self.storage.head(self.earlier[index - 1])
                if earlier is not None and earlier.get(META_JOB_ID) == self.job_id:
                    keys[index], found[index] = self.earlier[index - 1], earlier
        for key, metadata in zip(keys, found, strict=True):
            if metadata is not None:
                self._check(key, metadata)
        return Batch(keys, found)

    def _check(self, key: str, metadata: Metadata) -> None:
        # Outputs written before digests (or job ids) were recorded count as matching.
        if metadata.get(META_JOB_ID, self.job_id) != self.job_id:
            raise InvalidRequest(
                f"the output key {key} of job id {self.job_id} holds a picture of job "
                f"{metadata[META_JOB_ID]} written under the earlier key scheme"
            )
        if metadata.get(META_DIGEST, self.digest) != self.digest:
            raise InvalidRequest(f"job id {self.job_id} was already used for a different request")

    async def write(
        self,
        hold: Hold,
        found: Batch,
        pictures: Sequence[Image.Image],
        metadata: Sequence[Metadata],
    ) -> tuple[Batch, bool]:
        """Write the pictures where absent; the batch as it then stands, and
        whether it is the one drawn here (else another delivery's, whole).

        `found` is what :meth:`find` saw before drawing; S3 calls wait out
        an outage through `hold`.
        """
        pngs = await asyncio.gather(*(asyncio.to_thread(encode_png, p) for p in pictures))
        keys, now = list(found.keys), list(found.metadata)
        seed = metadata[0][META_REQUEST_SEED]
        if now[0] is None:  # picture 0 first, alone: it decides the batch
            if await self._put(hold, keys[0], pngs[0], metadata[0]):
                now[0] = metadata[0]
            else:
                winner = await self._taken(hold, keys[0])
                if _request_seed(winner) not in (seed, None):
                    return await self._await_winner(hold), False
                now[0] = winner
        rest = [i for i in range(1, len(keys)) if now[i] is None]
        written = await asyncio.gather(
            *(self._put(hold, keys[i], pngs[i], metadata[i]) for i in rest)
        )
        for index, won in zip(rest, written, strict=True):
            now[index] = metadata[index] if won else await self._taken(hold, keys[index])
        return Batch(keys, now), True

    async def _put(self, hold: Hold, key: str, png: bytes, metadata: Metadata) -> bool:
        return await hold.call(Service.S3, lambda: self.storage.put_png(key, png, metadata))

    async def _taken(self, hold: Hold, key: str) -> Metadata:
        """The metadata of the object that was at `key` before this delivery's write."""
        metadata = await hold.call(Service.S3, lambda: self.storage.head(key))
        if metadata is None:
            # Deleted between the refused write and this look: not ours to redo.
            raise BatchUnfinished(f"output {key} was there, then gone")
        self._check(key, metadata)
        return metadata

    async def _await_winner(self, hold: Hold) -> Batch:
        log.info("outputs_written_by_another_delivery", wait_s=WINNER_WAIT_S)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WINNER_WAIT_S
        while True:
            batch = await hold.call(Service.S3, self.find)
            if batch.whole:
                return batch
            if loop.time() >= deadline:
                raise BatchUnfinished(
                    "another delivery of this request is writing its pictures; "
                    "released to complete them later"
                )
            await asyncio.sleep(WINNER_POLL_S)


def continue_batch(spec: GenerationSpec, found: Batch) -> GenerationSpec:
    """The spec that completes a started batch: drawn with picture 0's request seed."""
    seed = found.request_seed()
    if not found.started or seed is None:
        return spec
    return dataclasses.replace(spec, seed=seed)


def _request_seed(metadata: Metadata) -> str | None:
    # Outputs written before the request seed was recorded had no redraws:
    # their first picture's seed is the request's.
    return metadata.get(META_REQUEST_SEED, metadata.get(META_SEED))


def _number(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None
