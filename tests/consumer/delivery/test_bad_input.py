"""A bad input picture ends its own request, never the worker."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.delivery.worker import EXIT_FATAL
from pipeline.api import preparer
from tests.corpus.hostile_pictures import jpeg_many_scans
from tests.support.aws import Stack
from tests.support.helpers import Observer, memory, png, running, settings
from tests.support.recording import Recording, blank


def _code(event: dict[str, Any]) -> str:
    return str(event["status"] if event["status"] == "succeeded" else event["error"]["code"])


async def test_running_out_of_memory_on_one_picture_is_its_invalid_input(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The process that prepares a picture may add 16 MiB of address space
    # here: a 12 MP picture needs more, a small one does not.
    monkeypatch.setattr(preparer, "BASE_BYTES", 16 * 1024 * 1024)
    monkeypatch.setattr(preparer, "BYTES_PER_PIXEL", 0)
    stack.put_input("avatars/user1/huge.png", png(4000, 3000))
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    generator = blank()
    async with running(generator) as worker:
        stack.send(memory("oom-1", image_key="avatars/user1/huge.png"))
        (failed,) = await observer.wait(1)
        stack.send(memory("after-oom"))
        events = await observer.wait(2)
        assert not worker.task.done()
        assert await worker.stop() != EXIT_FATAL
    assert [_code(e) for e in events] == ["invalid_input", "succeeded"]
    assert failed["error"]["retryable"] is False
    assert "memory" in failed["error"]["message"]
    assert len(generator.calls) == 1


async def test_a_picture_past_its_deadline_ends_its_own_request_not_the_other_slots(
    stack: Stack,
) -> None:
    # Some 30,000 scans of a 12 MP progressive JPEG: minutes of CPU to decode.
    stack.put_input("avatars/user1/slow.jpg", jpeg_many_scans(2 * 1024 * 1024, (4000, 3000)).data)
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    generator = blank()
    async with running(generator, settings(input_prep_timeout_s=3)) as worker:
        stack.send(memory("slow", image_key="avatars/user1/slow.jpg"))
        stack.send(memory("quick"))
        events = await observer.wait(2, within=60)
        stack.send(memory("after"))
        events = await observer.wait(3, within=60)
        assert not worker.task.done()
    # The other slot's job was prepared, drawn and delivered meanwhile.
    assert [(e["job_id"], _code(e)) for e in events] == [
        ("quick", "succeeded"),
        ("slow", "invalid_input"),
        ("after", "succeeded"),
    ]
    assert "took longer than 3 s" in events[1]["error"]["message"]
    assert events[1]["error"]["retryable"] is False
    assert len(stack.receive_all(stack.dlq_url)) == 1


async def test_a_shape_beyond_the_aspect_limit_is_refused_then_the_next_is_served(
    stack: Stack,
) -> None:
    stack.put_input("avatars/user1/wide.png", png(900, 100))
    stack.put_input("avatars/user1.png", png(800, 100))
    observer = Observer(stack)
    generator = Recording()
    async with running(generator, settings(max_input_aspect=8)):
        stack.send(memory("too-wide", image_key="avatars/user1/wide.png"))
        await observer.wait(1)
        stack.send(memory("wide-enough"))
        events = await observer.wait(2)
    assert [_code(e) for e in events] == ["invalid_input", "succeeded"]
    assert "aspect ratio" in events[0]["error"]["message"]
    # builtin:blank uses no reference: it gets the checked picture, upright, unframed.
    assert [image.size for image in generator.images] == [(800, 100)]
