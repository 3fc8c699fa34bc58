"""builtin:tiny: the real diffusers code path, through the consumer and moto."""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch
from PIL import Image

from consumer.cli.run import load_generator
from consumer.cli.samples import avatar, photo
from consumer.delivery.gpu_thread import GpuThread
from pipeline.engine.generator import SDXLGenerator
from tests.support.aws import Stack
from tests.support.helpers import Observer, memory, running, settings, subject


async def test_tiny_model_draws_memory_and_subject_jobs_at_the_asked_size(stack: Stack) -> None:
    stack.put_input("avatars/user1.png", avatar())
    stack.put_input("subjects/user1.jpg", photo())
    gpu = GpuThread()
    config = settings(model_path="builtin:tiny", warmup=False)
    generator = await load_generator(config, gpu)
    assert generator.model_name == "builtin:tiny"
    observer = Observer(stack)
    async with running(generator, config):
        stack.send(memory("tiny-m", num_inference_steps=2, width=64, height=128))
        stack.send(subject("tiny-s", num_inference_steps=2, width=None, height=None))
        events = await observer.wait(2, within=120)
    gpu.close()
    by_kind = {event["kind"]: event for event in events}
    assert {e["status"] for e in events} == {"succeeded"}
    assert by_kind["subject"]["parameters"]["width"] == generator.native_size[0]
    s3 = stack.client("s3")
    for kind, size in (("memory", (64, 128)), ("subject", generator.native_size)):
        event = by_kind[kind]
        assert event["model"] == "builtin:tiny"
        key = event["data"][0]["s3_uri"].split("/", 3)[3]
        picture = Image.open(io.BytesIO(s3.get_object(Bucket=stack.bucket, Key=key)["Body"].read()))
        assert picture.format == "PNG"
        assert picture.size == size


async def test_a_request_that_runs_out_of_memory_twice_is_too_large_and_the_worker_goes_on(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack.put_input("avatars/user1.png", avatar())
    gpu = GpuThread()
    config = settings(model_path="builtin:tiny", warmup=False)
    generator = await load_generator(config, gpu)
    assert isinstance(generator, SDXLGenerator)
    unet = generator.pipeline.unet
    real = unet.forward
    failures = [2]

    def forward(*args: Any, **kwargs: Any) -> Any:
        # Out of memory on the first two passes: the request and its second try.
        if failures[0]:
            failures[0] -= 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(unet, "forward", forward)
    observer = Observer(stack)
    async with running(generator, config) as handle:
        stack.send(memory("huge", num_inference_steps=2, num_images=2, width=128, height=128))
        (failed,) = await observer.wait(1, within=120)
        stack.send(memory("after", num_inference_steps=2, width=64, height=64))
        _, after = await observer.wait(2, within=120)
        assert not handle.task.done()  # the worker lives on
    gpu.close()
    assert failed["error"]["code"] == "too_large"
    assert failed["error"]["retryable"] is False
    assert "2x128x128" in failed["error"]["message"]
    assert "fewer pictures" in failed["error"]["message"]
    (dead,) = stack.receive_all(stack.dlq_url)
    assert dead["MessageAttributes"]["error_code"]["StringValue"] == "too_large"
    assert after["status"] == "succeeded"


async def test_the_tiny_model_counts_prompt_tokens_with_its_tokenizer(stack: Stack) -> None:
    stack.put_input("avatars/user1.png", avatar())
    gpu = GpuThread()
    config = settings(model_path="builtin:tiny", warmup=False, max_prompt_tokens=50)
    generator = await load_generator(config, gpu)
    observer = Observer(stack)
    async with running(generator, config):
        # 12 words of one token each, and 60: the first fits 50 tokens, the second not.
        stack.send(memory("fits", prompt="sun " * 12, style_prompt="", num_inference_steps=1))
        stack.send(memory("long", prompt="sun " * 60, style_prompt="", num_inference_steps=1))
        events = {e["job_id"]: e for e in await observer.wait(2, within=120)}
    gpu.close()
    assert events["fits"]["status"] == "succeeded"
    assert events["long"]["error"]["code"] == "invalid_request"
    assert "60 tokens" in events["long"]["error"]["message"]
