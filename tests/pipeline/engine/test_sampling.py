"""Schedulers and timestep spacing, the few-step LoRA recipe, VAE tiling, compile settings."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock
from unittest.mock import call

import pytest
import torch

from pipeline.api.config import BUILTIN_TINY, SCHEDULERS, PipelineConfig
from pipeline.api.errors import ModelLoadError
from pipeline.engine.generator import SDXLGenerator
from pipeline.engine.runtime.placement import place
from pipeline.engine.runtime.schedulers import configure_scheduler
from tests.support.assets import load_generator, noise_picture, one
from tests.support.specs import spec

AVATAR = noise_picture(1)
TINY = PipelineConfig(model_path=BUILTIN_TINY, warmup=False)


@pytest.fixture(scope="module")
def own() -> SDXLGenerator:
    """A generator whose scheduler the tests replace (the shared `tiny` keeps its own)."""
    return load_generator(TINY)


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_trailing_spacing_starts_every_run_at_the_last_timestep(
    own: SDXLGenerator, steps: int
) -> None:
    # SDXL's leading spacing starts a 1-step run at timestep 1, pure noise
    # read as an almost clean picture; trailing starts at 999 for any count.
    configure_scheduler(own.pipeline, dataclasses.replace(TINY, timestep_spacing="trailing"))
    one(own, spec(num_inference_steps=steps), AVATAR)
    timesteps = own.pipeline.scheduler.timesteps
    assert len(timesteps) == steps
    assert int(timesteps[0]) == 999
    configure_scheduler(own.pipeline, dataclasses.replace(TINY, timestep_spacing="leading"))
    one(own, spec(num_inference_steps=steps), AVATAR)
    assert int(own.pipeline.scheduler.timesteps[0]) != 999


def test_the_default_spacing_is_trailing(tiny: SDXLGenerator) -> None:
    assert tiny.pipeline.scheduler.config.timestep_spacing == "trailing"


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_scheduler_is_built_from_the_model_config_and_draws(
    own: SDXLGenerator, name: str
) -> None:
    base = own.pipeline.scheduler.config
    configure_scheduler(own.pipeline, dataclasses.replace(TINY, scheduler=name))
    scheduler = own.pipeline.scheduler
    assert type(scheduler).__name__ == name
    assert scheduler.config.timestep_spacing == "trailing"
    # The model's noise schedule carries over.
    assert scheduler.config.beta_end == base.beta_end == 0.012
    assert one(own, spec(num_inference_steps=4, guidance_scale=1.0), AVATAR).size == (128, 128)


def test_dpm_2m_karras_is_dpm_solver_with_karras_sigmas(tiny: SDXLGenerator) -> None:
    holder = SimpleNamespace(scheduler=tiny.pipeline.scheduler)
    config = dataclasses.replace(
        TINY, scheduler="DPMSolverMultistepScheduler", scheduler_karras=True
    )
    configure_scheduler(holder, config)
    assert type(holder.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert holder.scheduler.config.use_karras_sigmas is True


def test_karras_on_a_model_scheduler_without_it_fails_at_load(tiny: SDXLGenerator) -> None:
    ddim = type("DDIMScheduler", (), {"config": tiny.pipeline.scheduler.config})
    holder = SimpleNamespace(scheduler=ddim())
    with pytest.raises(ModelLoadError, match="no Karras sigmas"):
        configure_scheduler(holder, dataclasses.replace(TINY, scheduler_karras=True))


def test_few_step_recipe_lora_lcm_four_steps_guidance_one(
    tiny: SDXLGenerator, tiny_lora: Path
) -> None:
    fast = load_generator(
        dataclasses.replace(TINY, lora_path=str(tiny_lora), scheduler="LCMScheduler")
    )
    job = spec(num_inference_steps=4, guidance_scale=1.0, num_images=2)
    unet_batches: list[int] = []
    real = fast.pipeline.unet.forward

    def forward(sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        unet_batches.append(sample.shape[0])
        return real(sample, *args, **kwargs)

    with mock.patch.object(fast.pipeline.unet, "forward", forward):
        pictures = fast.generate(job, AVATAR)
    assert [p.size for p in pictures] == [(128, 128)] * 2
    assert type(fast.pipeline.scheduler).__name__ == "LCMScheduler"
    # Four steps, and guidance 1 runs no unconditional half: 2 latents a step.
    assert unet_batches == [2, 2, 2, 2]


def test_vae_tiles_only_above_the_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    generator = load_generator(dataclasses.replace(TINY, vae_tiling_pixels=128 * 128))
    vae = generator.pipeline.vae
    tiled: list[int] = []
    real = vae.tiled_decode

    def tiled_decode(*args: Any, **kwargs: Any) -> Any:
        tiled.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(vae, "tiled_decode", tiled_decode)
    # (width, height), tiling on, tiled decodes so far
    runs = [((128, 128), False, 0), ((192, 128), True, 1), ((128, 128), False, 1)]
    for (width, height), expected, decodes in runs:
        picture = one(generator, spec(width=width, height=height, num_inference_steps=1), AVATAR)
        assert picture.size == (width, height)
        assert vae.use_tiling is expected
        assert len(tiled) == decodes


def test_no_threshold_never_tiles(own: SDXLGenerator) -> None:
    one(own, spec(width=256, height=256, num_inference_steps=1), AVATAR)
    assert own.pipeline.vae.use_tiling is False


@pytest.fixture
def gpu_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU settings `place` makes, put back after the test."""
    for flag in ("cuda.matmul.allow_tf32", "cudnn.allow_tf32", "cudnn.benchmark"):
        owner, _, name = f"backends.{flag}".rpartition(".")
        target: Any = torch
        for part in owner.split("."):
            target = getattr(target, part)
        monkeypatch.setattr(target, name, getattr(target, name))


@pytest.mark.usefixtures("gpu_flags")
def test_compile_covers_the_unet_in_the_mode_asked_and_leaves_the_vae_decoder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The GPU branch of `place` on a stand-in pipeline: no CUDA here, and
    # the calls, not a compilation, are what is checked.
    compiled: list[dict[str, Any]] = []

    def fake_compile(function: Any, **options: Any) -> Any:
        compiled.append(options)
        return function

    monkeypatch.setattr(torch, "compile", fake_compile)
    pipe = mock.MagicMock()
    forward = pipe.unet.forward
    place(
        pipe, torch.device("cuda"), torch.bfloat16, compile_unet=True, compile_mode="max-autotune"
    )
    # Static sizes (the batch and the prompt's length are marked dynamic per call).
    assert compiled == [{"backend": "inductor", "dynamic": False, "mode": "max-autotune"}]
    assert pipe.unet.forward is not forward
    pipe.unet.to.assert_any_call(memory_format=torch.channels_last)
    # An eager VAE decoder keeps its layout: channels-last would copy every
    # activation at each GroupNorm.
    assert call(memory_format=torch.channels_last) not in pipe.vae.to.call_args_list
    pipe.vae.decoder.compile.assert_not_called()
    plain = mock.MagicMock()
    plain_forward = plain.unet.forward
    place(plain, torch.device("cuda"), torch.bfloat16, compile_unet=False)
    assert plain.unet.forward is plain_forward
    assert len(compiled) == 1
    with_vae = mock.MagicMock()
    decoder_forward = with_vae.vae.decoder.forward
    place(with_vae, torch.device("cuda"), torch.bfloat16, compile_unet=True, compile_vae=True)
    assert with_vae.vae.decoder.forward is not decoder_forward
    with_vae.vae.to.assert_any_call(memory_format=torch.channels_last)
    assert len(compiled) == 3


@pytest.mark.usefixtures("gpu_flags")
def test_regional_compilation_compiles_the_repeated_blocks_with_dynamic_shapes() -> None:
    pipe = mock.MagicMock()
    place(
        pipe,
        torch.device("cuda"),
        torch.bfloat16,
        compile_unet=True,
        compile_mode="reduce-overhead",
        compile_regional=True,
    )
    pipe.unet.compile_repeated_blocks.assert_called_once_with(
        backend="inductor", dynamic=True, mode="reduce-overhead"
    )
