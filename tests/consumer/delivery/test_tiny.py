"""builtin:tiny: the real diffusers code path, through the consumer and moto."""

from __future__ import annotations

import io

from PIL import Image

from consumer.cli.run import load_generator
from consumer.cli.samples import avatar, photo
from consumer.delivery.gpu_thread import GpuThread
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
