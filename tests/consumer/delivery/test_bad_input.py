"""A bad input picture ends its own request, never the worker."""

from __future__ import annotations

from typing import Any

import pytest
from PIL import Image

from consumer.delivery.worker import EXIT_FATAL
from pipeline.api import reference
from tests.support.aws import Stack
from tests.support.helpers import Observer, memory, png, running, settings
from tests.support.recording import Recording, blank


def _code(event: dict[str, Any]) -> str:
    return str(event["status"] if event["status"] == "succeeded" else event["error"]["code"])


async def test_running_out_of_memory_on_one_picture_is_its_invalid_input(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    decode = reference._decode_reduced

    def exhausted_once(image: Image.Image) -> Image.Image:
        if image.size == (40, 40):
            raise MemoryError
        return decode(image)

    monkeypatch.setattr(reference, "_decode_reduced", exhausted_once)
    stack.put_input("avatars/user1/huge.png", png(40, 40))
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
