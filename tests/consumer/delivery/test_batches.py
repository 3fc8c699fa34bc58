"""Several pictures per request (contract 8.2), end to end through the queue."""

from __future__ import annotations

import io

from PIL import Image

from tests.support.aws import Stack
from tests.support.helpers import Observer, eventually, memory, running, settings
from tests.support.recording import blank


async def test_n_pictures_in_one_batch_at_their_keys_with_their_seeds(stack: Stack) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    generator = blank()
    async with running(generator):
        stack.send(memory("m-3", num_images=3, seed=2**32 - 2))
        (event,) = await observer.wait(1)
        await eventually(lambda: stack.queue_counts() == (0, 0), what="the request deleted")

    assert event["status"] == "succeeded"
    keys = [
        "generated/user1/memory_m-3.png",
        "generated/user1/memory_m-3.1.png",
        "generated/user1/memory_m-3.2.png",
    ]
    # The seeds wrap around at 2^32.
    assert event["data"] == [
        {"s3_uri": f"s3://{stack.bucket}/{key}", "seed": seed}
        for key, seed in zip(keys, [2**32 - 2, 2**32 - 1, 0], strict=True)
    ]
    assert sorted(stack.outputs()) == sorted(keys)
    assert [spec.num_images for spec in generator.calls] == [3]  # one batch, not three calls
    s3 = stack.client("s3")
    for key, seed in zip(keys, ["4294967294", "4294967295", "0"], strict=True):
        obj = s3.get_object(Bucket=stack.bucket, Key=key)
        assert obj["Metadata"]["seed"] == seed
        assert Image.open(io.BytesIO(obj["Body"].read())).size == (64, 64)


async def test_a_batch_is_reused_only_when_every_picture_exists(stack: Stack) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    generator = blank()
    request = memory("m-2", num_images=2)
    async with running(generator):
        stack.send(request)
        (first,) = await observer.wait(1)
        stack.client("s3").delete_object(
            Bucket=stack.bucket, Key="generated/user1/memory_m-2.1.png"
        )
        stack.send(request)
        second = (await observer.wait(2))[1]
        stack.send(request)
        third = (await observer.wait(3))[2]
    assert [first["reused"], second["reused"], third["reused"]] == [False, False, True]
    assert len(generator.calls) == 2
    assert third["data"] == first["data"]
    assert len(stack.outputs()) == 2


async def test_too_many_pictures_or_pixels_are_invalid_requests(stack: Stack) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    generator = blank()
    async with running(generator, settings(max_batch_pixels=3 * 64 * 64)):
        stack.send(memory("m-5", num_images=5))
        stack.send(memory("m-4", num_images=4))
        events = await observer.wait(2)
        await eventually(lambda: stack.queue_counts() == (0, 0), what="both requests removed")
    by_job = {event["job_id"]: event for event in events}
    assert by_job["m-5"]["error"]["code"] == "invalid_request"
    assert "num_images" in by_job["m-5"]["error"]["message"]
    assert by_job["m-4"]["error"]["code"] == "invalid_request"
    assert "MAX_BATCH_PIXELS" in by_job["m-4"]["error"]["message"]
    assert generator.calls == []
    assert stack.outputs() == []
    assert len(stack.receive_all(stack.dlq_url)) == 2
