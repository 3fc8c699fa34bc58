"""Contract sections 2 to 4 end to end: moto's server, aioboto3, builtin:blank."""

from __future__ import annotations

import io
import re
from typing import cast

from PIL import Image

from tests.support.aws import Stack
from tests.support.helpers import Observer, eventually, memory, png, running, subject
from tests.support.recording import blank

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def test_memory_job_writes_png_then_event_then_deletes(stack: Stack) -> None:
    stack.put_input("avatars/user1.png")
    message_id = stack.send(memory("m-001", width=128, height=64))
    observer = Observer(stack)
    generator = blank()
    async with running(generator):
        (event,) = await observer.wait(1)
        await eventually(lambda: stack.queue_counts() == (0, 0), what="the request deleted")

    assert event["status"] == "succeeded"
    assert event["job_id"] == "m-001"
    assert event["kind"] == "memory"
    assert event["user_id"] == "user1"
    assert event["reused"] is False
    assert "error" not in event
    key = "generated/user1/memory_m-001.png"
    assert event["data"] == [{"s3_uri": f"s3://{stack.bucket}/{key}", "seed": 7}]
    assert event["model"] == "builtin:blank"
    assert event["attempts"] == 1
    assert event["worker_id"] == "test-worker"
    assert event["sqs_message_id"] == message_id
    assert TIMESTAMP.match(event["finished_at"])
    assert set(event["timings_ms"]) == {"queue_wait", "download", "generate", "upload", "total"}
    assert event["parameters"]["seed"] == 7
    assert event["parameters"]["width"] == 128
    assert event["parameters"]["height"] == 64
    assert event["parameters"]["style_prompt"].startswith("highest quality")
    assert observer.attributes[0] == {"status": "succeeded", "kind": "memory"}

    obj = stack.client("s3").get_object(Bucket=stack.bucket, Key=key)
    assert obj["ContentType"] == "image/png"
    metadata = obj["Metadata"]
    assert len(metadata.pop("request-digest")) == 64
    assert metadata == {
        "job-id": "m-001",
        "seed": "7",
        "request-seed": "7",
        "model": "builtin:blank",
    }
    picture = Image.open(io.BytesIO(obj["Body"].read()))
    assert picture.format == "PNG"
    assert picture.size == (128, 64)
    assert len(generator.calls) == 1


async def test_subject_job_draws_a_random_seed_and_reports_it(stack: Stack) -> None:
    stack.put_input("subjects/user2.webp", _webp())
    observer = Observer(stack)
    async with running(blank()):
        stack.send(subject("s-001", user_id="user2"))
        (event,) = await observer.wait(1)
    assert event["status"] == "succeeded"
    assert event["kind"] == "subject"
    seed = event["parameters"]["seed"]
    assert 0 <= seed < 2**32
    assert event["parameters"]["prompt"] == ""
    meta = stack.client("s3").head_object(
        Bucket=stack.bucket, Key="generated/user2/subject_s-001.png"
    )["Metadata"]
    assert meta["seed"] == str(seed)
    assert stack.outputs() == ["generated/user2/subject_s-001.png"]


def _webp() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(buffer, format="WEBP")
    return buffer.getvalue()


async def test_redelivered_finished_job_is_reused_not_generated_again(stack: Stack) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    generator = blank()
    async with running(generator):
        stack.send(memory("m-002", seed=None))
        (first,) = await observer.wait(1)
        stack.send(memory("m-002", seed=None))
        events = await observer.wait(2)
        await eventually(lambda: stack.queue_counts() == (0, 0), what="both deleted")
    second = events[1]
    assert second["status"] == "succeeded"
    assert second["reused"] is True
    assert second["data"] == first["data"]
    # The drawn seed of the existing picture is reported, not a new one.
    assert second["parameters"]["seed"] == first["parameters"]["seed"]
    assert "generate" not in second["timings_ms"]
    assert len(generator.calls) == 1
    assert stack.outputs() == ["generated/user1/memory_m-002.png"]


async def test_input_candidates_are_tried_in_order(stack: Stack) -> None:
    stack.put_input("avatars/user1.jpeg", _jpeg((0, 0, 255)))
    stack.put_input("avatars/user1.jpg", _jpeg((255, 0, 0)))
    stack.put_input("avatars/user1.webp", _webp())
    stack.put_input("avatars/user1/explicit/pic.png", png(color=(0, 255, 0)))
    observer = Observer(stack)
    generator = blank()
    async with running(generator):
        stack.send(memory("m-order"))
        await observer.wait(1)
        stack.send(memory("m-key", image_key="avatars/user1/explicit/pic.png"))
        await observer.wait(2)
    assert [e["status"] for e in observer.events] == ["succeeded", "succeeded"]
    red, green = (cast(tuple[int, ...], image.getpixel((4, 4))) for image in generator.images)
    # The .jpg, the first of the candidates that exists.
    assert red[0] > 200
    assert red[2] < 50
    assert green == (0, 255, 0)


async def test_exif_orientation_is_honoured(stack: Stack) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: the upright picture is 10 wide, 20 high
    buffer = io.BytesIO()
    Image.new("RGB", (20, 10), (9, 9, 9)).save(buffer, format="JPEG", exif=exif)
    stack.put_input("subjects/user1.jpg", buffer.getvalue())
    observer = Observer(stack)
    generator = blank()
    async with running(generator):
        stack.send(subject("s-exif"))
        await observer.wait(1)
    assert generator.images[0].size == (10, 20)


def _jpeg(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()
