"""Requests in catalog styles, through the worker and moto: events, defaults, refusals."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from consumer.aws.style_source import StyleShelf
from consumer.cli.run import load_generator
from consumer.cli.samples import avatar
from consumer.delivery.gpu_thread import GpuThread
from pipeline.api.lora_files import file_digest
from tests.support.assets import make_tiny_lora
from tests.support.aws import Stack
from tests.support.helpers import Observer, memory, running, settings
from tests.support.lora_headers import diffusers_lora
from tests.support.recording import Recording

CATALOG = """
default: plain
styles:
  ink:
    style_prompt: "ink drawing, cross-hatched"
    negative_prompt: "colour"
    lora: ink.safetensors
    lora_scale: 0.8
    defaults: {num_inference_steps: 3, guidance_scale: 2.5}
  plain: {style_prompt: "plain watercolour"}
"""


async def _shelf(tmp_path: Path, lora: Path | None = None) -> StyleShelf:
    if lora is None:
        diffusers_lora(tmp_path / "ink.safetensors")
    (tmp_path / "styles.yaml").write_text(CATALOG)
    shelf = StyleShelf(settings(styles_path=str(tmp_path / "styles.yaml")))
    await shelf.load()
    return shelf


async def test_a_style_fills_the_request_and_the_event_names_it(
    stack: Stack, tmp_path: Path
) -> None:
    stack.put_input("avatars/user1.png")
    shelf = await _shelf(tmp_path)
    generator = Recording()
    observer = Observer(stack)
    async with running(generator, styles=shelf):
        stack.send(memory("in-ink", style="ink", style_strength=0.5, num_inference_steps=None))
        stack.send(memory("own-steps", style="ink", num_inference_steps=7))
        stack.send(memory("default"))
        events = {e["job_id"]: e for e in await observer.wait(3)}
    assert {e["status"] for e in events.values()} == {"succeeded"}
    ink = events["in-ink"]["parameters"]
    digest = file_digest(tmp_path / "ink.safetensors")
    assert (ink["style"], ink["style_strength"], ink["style_digest"]) == ("ink", 0.5, digest)
    assert (ink["style_prompt"], ink["negative_prompt"]) == ("ink drawing, cross-hatched", "colour")
    assert (ink["num_inference_steps"], ink["guidance_scale"]) == (3, 2.5)
    assert events["own-steps"]["parameters"]["num_inference_steps"] == 7
    default = events["default"]["parameters"]
    assert (default["style"], default["style_digest"]) == ("plain", None)
    assert default["style_prompt"] == "plain watercolour"
    scales = {call.style: call.style_lora_scale for call in generator.calls}
    assert scales["plain"] == 0.0
    assert sorted(c.style_lora_scale for c in generator.calls if c.style == "ink") == [0.4, 0.8]


async def test_an_unknown_style_is_an_invalid_request_naming_only_the_styles(
    stack: Stack, tmp_path: Path
) -> None:
    stack.put_input("avatars/user1.png")
    generator = Recording()
    observer = Observer(stack)
    async with running(generator, styles=await _shelf(tmp_path)):
        stack.send(memory("oils", style="oils"))
        [event] = await observer.wait(1)
    assert event["status"] == "failed"
    assert event["error"] == {
        "code": "invalid_request",
        "message": "unknown style 'oils'; styles: ink, plain",
        "retryable": False,
    }
    assert generator.calls == []
    [dead] = stack.receive_all(stack.dlq_url)
    assert dead["MessageAttributes"]["error_code"]["StringValue"] == "invalid_request"


async def test_the_tiny_model_draws_a_style_with_its_lora(stack: Stack, tmp_path: Path) -> None:
    stack.put_input("avatars/user1.png", avatar())
    lora = make_tiny_lora(tmp_path / "ink.safetensors", seed=5)
    shelf = await _shelf(tmp_path, lora)
    config = settings(model_path="builtin:tiny", warmup=False, styles_path=shelf.source)
    gpu = GpuThread()
    generator = await load_generator(config, gpu, StyleShelf(config))
    observer = Observer(stack)
    try:
        async with running(generator, config, styles=shelf):
            for job_id, style in (("tiny-ink", "ink"), ("tiny-plain", "plain")):
                stack.send(memory(job_id, style=style, prompt="a lake", seed=3))
            events = {e["job_id"]: e for e in await observer.wait(2, within=120)}
    finally:
        gpu.close()
    assert {e["status"] for e in events.values()} == {"succeeded"}
    assert events["tiny-ink"]["parameters"]["style_digest"] == file_digest(lora)
    pictures = []
    for event in events.values():
        key = event["data"][0]["s3_uri"].split("/", 3)[3]
        body = stack.client("s3").get_object(Bucket=stack.bucket, Key=key)["Body"].read()
        pictures.append(Image.open(io.BytesIO(body)).tobytes())
    assert pictures[0] != pictures[1]
