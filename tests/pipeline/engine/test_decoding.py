"""The decode stage: diffusers' pictures, one at a time, in the VAE's own precision, as bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from pipeline.api.config import BUILTIN_TINY, PipelineConfig
from pipeline.builtin.tiny import _vae
from pipeline.engine.generator import SDXLGenerator
from pipeline.engine.runtime.decoding import Decoder
from pipeline.engine.runtime.placement import vae_dtype
from tests.support.assets import load_generator, noise_picture, pixels
from tests.support.specs import spec

AVATAR = noise_picture(1)
TINY = PipelineConfig(model_path=BUILTIN_TINY, warmup=False)


def test_the_pictures_are_diffusers_own_decode_of_the_latents(
    tiny: SDXLGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[torch.Tensor] = []
    real = Decoder.decode

    def decode(self: Decoder, latents: torch.Tensor) -> Any:
        seen.append(latents.clone())
        return real(self, latents)

    monkeypatch.setattr(Decoder, "decode", decode)
    pictures = tiny.generate(spec(num_images=3, num_inference_steps=2), AVATAR)
    # What diffusers 0.42's SDXL pipeline does after the loop, whole batch at once.
    pipe = tiny.pipeline
    with torch.inference_mode():
        images = pipe.vae.decode(seen[0] / pipe.vae.config.scaling_factor, return_dict=False)[0]
    theirs = pipe.image_processor.postprocess(images, output_type="pil")
    for ours, expected in zip(pictures, theirs, strict=True):
        # One picture at a time against a batch: within 1 of 255.
        assert np.abs(pixels(ours) - pixels(expected)).max() <= 1


def test_the_pictures_cross_to_the_host_as_eight_bit_rgb(tiny: SDXLGenerator) -> None:
    latents = torch.randn(2, 4, 16, 24)
    decoded = Decoder(tiny.pipeline, None).decode(latents)
    assert [(p.dtype, tuple(p.shape)) for p in decoded.pixels] == [(torch.uint8, (128, 192, 3))] * 2

    class HostReads(TorchFunctionMode):
        def __init__(self) -> None:
            super().__init__()
            self.read: list[tuple[str, torch.dtype]] = []

        def __torch_function__(
            self, func: Any, types: Any, args: Any = (), kwargs: Any = None
        ) -> Any:
            if func in (torch.Tensor.cpu, torch.Tensor.numpy, torch.Tensor.to):
                self.read.append((func.__name__, args[0].dtype))
            return func(*args, **(kwargs or {}))

    with HostReads() as reads:
        pictures = decoded.pictures()
    assert {dtype for _, dtype in reads.read} == {torch.uint8}
    assert [p.size for p in pictures] == [(192, 128)] * 2
    assert np.array_equal(np.asarray(pictures[1]), decoded.pixels[1].numpy())


def test_half_precision_keeps_sdxls_vae_in_float32_with_no_cast_per_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    generator = load_generator(
        PipelineConfig(model_path=BUILTIN_TINY, warmup=False, dtype="float16")
    )
    vae = generator.pipeline.vae
    # The tiny VAE, like SDXL's, says it overflows in float16.
    assert vae.config.force_upcast
    assert generator.pipeline.unet.dtype == torch.float16
    assert vae.dtype == torch.float32
    casts: list[Any] = []
    real = type(vae).to

    def to(module: Any, *args: Any, **kwargs: Any) -> Any:
        casts.append((args, kwargs))
        return real(module, *args, **kwargs)

    monkeypatch.setattr(type(vae), "to", to)
    failures = [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")]
    decodes: list[torch.dtype] = []

    def fail_once(module: Any, args: Any) -> None:
        decodes.append(args[0].dtype)
        if failures:
            raise failures.pop()

    hook = vae.decoder.register_forward_pre_hook(fail_once)
    try:
        # The out-of-memory decode is drawn again, still in float32.
        [picture] = generator.generate(spec(), AVATAR)
        [again] = generator.generate(spec(), AVATAR)
    finally:
        hook.remove()
    assert not failures
    assert decodes == [torch.float32] * 3
    assert picture.size == again.size == (128, 128)
    assert casts == []
    assert vae.dtype == torch.float32


def test_an_fp16_safe_vae_decodes_in_float16(tmp_path: Path) -> None:
    safe = _vae()
    safe.register_to_config(force_upcast=False)
    safe.save_pretrained(tmp_path / "vae", safe_serialization=True)
    generator = load_generator(
        PipelineConfig(
            model_path=BUILTIN_TINY, warmup=False, dtype="float16", vae_path=str(tmp_path / "vae")
        )
    )
    assert generator.pipeline.vae.dtype == torch.float16
    [picture] = generator.generate(spec(num_inference_steps=1), AVATAR)
    assert picture.size == (128, 128)


@pytest.mark.parametrize(
    ("force_upcast", "dtype", "expected"),
    [
        (True, torch.float16, torch.float32),
        (False, torch.float16, torch.float16),
        (True, torch.bfloat16, torch.bfloat16),
        (True, torch.float32, torch.float32),
    ],
)
def test_the_vae_precision(force_upcast: bool, dtype: torch.dtype, expected: torch.dtype) -> None:
    config = type("Config", (), {"force_upcast": force_upcast})()
    assert vae_dtype(config, dtype) == expected


def test_pictures_above_a_million_pixels_decode_in_tiles_by_default() -> None:
    assert TINY.tiling_threshold == 1024 * 1024
    assert PipelineConfig(model_path=BUILTIN_TINY, vae_tiling_pixels=0).tiling_threshold is None
