"""The first writer of a job's pictures wins; no batch is ever mixed (moto's S3).

The rule (:mod:`consumer.delivery.outputs`) is tried step by step on the
writer itself, and end to end with two workers that draw the same request
at the same moment and race to write it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from PIL import Image

from consumer.aws.clients import open_clients
from consumer.aws.storage import Storage
from consumer.cli.local_aws import REGION
from consumer.clock import SystemClock
from consumer.contract.request import Request, parse_request, request_digest
from consumer.delivery import outputs as outputs_module
from consumer.delivery.holding import Hold, Holds
from consumer.delivery.outage import Outages
from consumer.delivery.outputs import Batch, BatchUnfinished, Outputs
from consumer.errors import InvalidRequest
from consumer.metrics import Metrics
from tests.support.aws import Stack
from tests.support.helpers import FAST, Observer, eventually, memory, running, settings
from tests.support.recording import blank

USER = "user1"


def _request(job_id: str = "j", count: int = 3, **fields: Any) -> Request:
    body = {"job_id": job_id, "kind": "memory", "user_id": USER, "prompt": "p", **fields}
    return parse_request(json.dumps({**body, "num_images": count}).encode(), settings())


def _metadata(request: Request, request_seed: int, count: int) -> list[dict[str, str]]:
    return [
        {
            "job-id": request.job_id,
            "seed": str(request_seed + i),
            "request-seed": str(request_seed),
            "model": "test",
            "request-digest": request_digest(request),
        }
        for i in range(count)
    ]


def _pictures(count: int) -> list[Image.Image]:
    return [Image.new("RGB", (8, 8), (i, i, i)) for i in range(count)]


class Writer:
    """One delivery's view of a request's outputs, on moto's S3."""

    def __init__(self, storage: Storage, request: Request, count: int = 3) -> None:
        self.outputs = Outputs(storage, settings(), request, count)
        self.request, self.count = request, count
        clock = SystemClock()
        self.hold: Hold = Holds(Outages(clock, Metrics()), settings(), clock).of("receipt")

    async def write(self, request_seed: int, found: Batch | None = None) -> tuple[Batch, bool]:
        found = found or Batch(list(self.outputs.keys), [None] * self.count)
        metadata = _metadata(self.request, request_seed, self.count)
        return await self.outputs.write(self.hold, found, _pictures(self.count), metadata)


@pytest.fixture
def atomic_puts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make moto's conditional PutObject atomic, as S3's is.

    moto checks ``If-None-Match`` and then stores the object, and then its
    metadata, in separate steps without a lock: two writes racing on one key
    could both pass the check, and a HEAD could see the object before its
    metadata. S3 does all of it at once. A lock around moto's PutObject and
    HeadObject handlers stands in for that; it changes only the server's
    timing, never its answers.
    """
    from moto.s3.responses import S3Response

    lock = threading.RLock()
    for name in ("put_object", "head_object"):
        original = getattr(S3Response, name)

        def locked(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            with lock:
                return _original(self, *args, **kwargs)

        monkeypatch.setattr(S3Response, name, locked)


@pytest.fixture
async def storage(stack: Stack) -> AsyncIterator[Storage]:
    async with open_clients(REGION) as clients:
        yield Storage(clients.s3, stack.bucket)


def _stored_seeds(stack: Stack, keys: list[str]) -> list[tuple[str, str] | None]:
    """(request-seed, seed) of each key's object, ``None`` where there is none."""
    found = []
    for key in keys:
        try:
            meta = stack.client("s3").head_object(Bucket=stack.bucket, Key=key)["Metadata"]
        except Exception:
            found.append(None)
            continue
        found.append((meta["request-seed"], meta["seed"]))
    return found


async def test_a_writer_that_loses_picture_0_writes_nothing_and_reuses_the_winners(
    stack: Stack, storage: Storage
) -> None:
    first, second = Writer(storage, _request()), Writer(storage, _request())
    batch, drawn_here = await first.write(100)
    assert drawn_here
    # The second drew with another seed, before it could see the first's.
    reused, drawn_here = await second.write(200)

    assert not drawn_here
    assert reused.keys == batch.keys
    assert reused.seeds() == [100, 101, 102]
    assert _stored_seeds(stack, batch.keys) == [("100", "100"), ("100", "101"), ("100", "102")]


async def test_a_loser_waits_for_the_winners_batch_to_be_whole(
    stack: Stack, storage: Storage
) -> None:
    request = _request()
    winner, loser = Writer(storage, request), Writer(storage, request)
    keys = winner.outputs.keys
    metadata = _metadata(request, 100, 3)
    # The winner has written picture 0 and is about to write the others.
    assert await storage.put_png(keys[0], b"0", metadata[0])
    waiting = asyncio.create_task(loser.write(200))
    await asyncio.sleep(0.5)  # the loser lost picture 0 and is waiting: let it look
    assert not waiting.done()
    assert await storage.put_png(keys[1], b"1", metadata[1])
    assert await storage.put_png(keys[2], b"2", metadata[2])

    reused, drawn_here = await asyncio.wait_for(waiting, 10)

    assert not drawn_here
    assert reused.seeds() == [100, 101, 102]
    assert _stored_seeds(stack, keys) == [("100", "100"), ("100", "101"), ("100", "102")]


async def test_a_winner_that_never_finishes_gets_the_request_released(
    stack: Stack, storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outputs_module, "WINNER_WAIT_S", 0.3)
    request = _request()
    loser = Writer(storage, request)
    keys = loser.outputs.keys
    assert await storage.put_png(keys[0], b"0", _metadata(request, 100, 3)[0])

    with pytest.raises(BatchUnfinished):
        await loser.write(200)

    # The loser wrote none of its own pictures next to the winner's.
    assert _stored_seeds(stack, keys) == [("100", "100"), None, None]


async def test_a_started_batch_is_completed_with_picture_0s_seed(
    stack: Stack, storage: Storage
) -> None:
    request = _request()
    writer = Writer(storage, request)
    keys = writer.outputs.keys
    assert await storage.put_png(keys[0], b"0", _metadata(request, 100, 3)[0])
    found = await writer.outputs.find()
    assert (found.started, found.whole, found.request_seed()) == (True, False, 100)

    batch, drawn_here = await writer.write(100, found)

    assert drawn_here
    assert batch.seeds() == [100, 101, 102]
    assert _stored_seeds(stack, keys) == [("100", "100"), ("100", "101"), ("100", "102")]


@pytest.mark.usefixtures("atomic_puts")
async def test_two_writers_with_the_same_seed_both_succeed_with_one_batch(
    stack: Stack, storage: Storage
) -> None:
    request = _request(seed=5)
    results = await asyncio.gather(*(Writer(storage, request).write(5) for _ in range(2)))

    assert all(drawn_here for _, drawn_here in results)
    assert results[0][0].seeds() == results[1][0].seeds() == [5, 6, 7]
    assert _stored_seeds(stack, results[0][0].keys) == [("5", "5"), ("5", "6"), ("5", "7")]


async def test_another_request_under_the_same_job_id_is_refused_and_changes_nothing(
    stack: Stack, storage: Storage
) -> None:
    await Writer(storage, _request(prompt="first")).write(100)
    other = Writer(storage, _request(prompt="second"))
    with pytest.raises(InvalidRequest, match="already used for a different request"):
        await other.outputs.find()
    with pytest.raises(InvalidRequest, match="already used for a different request"):
        await other.write(100)  # it drew before the first's pictures were there
    assert _stored_seeds(stack, other.outputs.keys) == [
        ("100", "100"),
        ("100", "101"),
        ("100", "102"),
    ]


async def test_pictures_under_the_earlier_keys_are_found_when_they_are_the_jobs(
    stack: Stack, storage: Storage
) -> None:
    request = _request("a")
    metadata = _metadata(request, 9, 3)
    earlier = [
        f"generated/{USER}/memory_a.png",
        *(f"generated/{USER}/memory_a_{i}.png" for i in (1, 2)),
    ]
    for key, meta in zip(earlier, metadata, strict=True):
        assert await storage.put_png(key, b"old", meta)

    found = await Outputs(storage, settings(), request, 3).find()

    assert found.whole
    assert found.keys == earlier
    assert found.seeds() == [9, 10, 11]
    # Picture 0 of job a_1 shares a key with picture 1 of job a written
    # under the earlier scheme: that object is job a's, never job a_1's.
    with pytest.raises(InvalidRequest, match="holds a picture of job a written under"):
        await Outputs(storage, settings(), _request("a_1", count=1), 1).find()
    # At an earlier key, another job's picture is not taken for this job's:
    # memory_b_1.png is picture 0 of job b_1, not picture 1 of job b.
    job_b, job_b_1 = _request("b", count=2), _request("b_1", count=1)
    assert await storage.put_png(f"generated/{USER}/memory_b.png", b"", _metadata(job_b, 1, 1)[0])
    assert await storage.put_png(
        f"generated/{USER}/memory_b_1.png", b"", _metadata(job_b_1, 2, 1)[0]
    )
    found = await Outputs(storage, settings(), job_b, 2).find()
    assert found.keys == [f"generated/{USER}/memory_b.png", f"generated/{USER}/memory_b.1.png"]
    assert (found.started, found.whole) == (True, False)


@pytest.mark.usefixtures("atomic_puts")
async def test_two_workers_racing_on_a_request_without_a_seed_never_mix_its_pictures(
    stack: Stack,
) -> None:
    """Both draw the batch at the same moment with their own seeds, then race to write."""

    stack.put_input(f"avatars/{USER}.png")
    observer = Observer(stack)
    gate = threading.Event()
    first, second = blank(gate=gate), blank(gate=gate)
    request = memory("race", num_images=3)
    del request["seed"]
    # No prefetch: each worker takes one of the two deliveries.
    alone = dataclasses.replace(FAST, prefetch=0)
    async with running(first, options=alone), running(second, options=alone):
        stack.send(request)
        stack.send(request)
        await eventually(lambda: first.started.is_set() and second.started.is_set(), what="both")
        gate.set()
        events = await observer.wait(2, within=60)
        await eventually(lambda: stack.queue_counts() == (0, 0), what="both requests deleted")

    assert first.draws[0][0] != second.draws[0][0]  # two seeds were drawn
    assert all(event["status"] == "succeeded" for event in events)
    assert sorted(event["reused"] for event in events) == [False, True]
    assert events[0]["data"] == events[1]["data"]
    keys = [f"generated/{USER}/memory_race{suffix}.png" for suffix in ("", ".1", ".2")]
    assert sorted(stack.outputs()) == sorted(keys)
    stored = _stored_seeds(stack, keys)
    request_seed = int(stored[0][0])  # type: ignore[index]
    assert {event["parameters"]["seed"] for event in events} == {request_seed}
    expected = [(str(request_seed), str((request_seed + i) % 2**32)) for i in range(3)]
    assert stored == expected
    for key, (_, seed) in zip(keys, expected, strict=True):
        body = stack.client("s3").get_object(Bucket=stack.bucket, Key=key)["Body"].read()
        # builtin:blank shades each picture by its own seed: the pixels agree.
        assert Image.open(io.BytesIO(body)).getpixel((0, 0))[0] == 64 + int(seed) % 128
    assert stack.receive_all(stack.dlq_url) == []
