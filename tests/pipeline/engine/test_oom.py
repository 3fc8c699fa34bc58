"""Out of GPU memory: the same request once more after freeing memory, then
``too_large`` for the request (the generator lives on), or broken when a batch
that fitted before no longer does."""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import pytest
import torch

from pipeline.api.config import BUILTIN_TINY, PipelineConfig
from pipeline.api.errors import PipelineBrokenError, RequestTooLargeError
from pipeline.engine import generator as engine
from pipeline.engine.generator import SDXLGenerator
from tests.support.assets import load_generator, noise_picture, one, pixels
from tests.support.specs import spec

AVATAR = noise_picture(1)


class FlakyUNet:
    """Makes the UNet's forward pass run out of memory the next `failures` times."""

    def __init__(self, generator: SDXLGenerator, monkeypatch: pytest.MonkeyPatch) -> None:
        self.failures = 0
        self.raised = 0
        unet = generator.pipeline.unet
        real = unet.forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            if self.failures:
                self.failures -= 1
                self.raised += 1
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return real(*args, **kwargs)

        monkeypatch.setattr(unet, "forward", forward)


@pytest.fixture
def generator() -> SDXLGenerator:
    return load_generator(PipelineConfig(model_path=BUILTIN_TINY, warmup=False))


@pytest.fixture
def freed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The devices whose memory the generator freed, in order."""
    calls: list[str] = []
    real = engine.free_memory

    def free(device: torch.device) -> None:
        calls.append(device.type)
        real(device)

    monkeypatch.setattr(engine, "free_memory", free)
    return calls


def test_one_oom_frees_memory_and_draws_the_same_request_again(
    generator: SDXLGenerator, monkeypatch: pytest.MonkeyPatch, freed: list[str]
) -> None:
    clean = pixels(one(generator, spec(), AVATAR))
    flaky = FlakyUNet(generator, monkeypatch)
    flaky.failures = 1
    again = pixels(one(generator, spec(), AVATAR))
    assert flaky.raised == 1
    assert freed == ["cpu"]
    # The second try is the request itself: the same seed, the same picture.
    assert np.array_equal(again, clean)


def test_out_of_memory_again_is_too_large_and_the_generator_lives_on(
    generator: SDXLGenerator, monkeypatch: pytest.MonkeyPatch, freed: list[str]
) -> None:
    flaky = FlakyUNet(generator, monkeypatch)
    flaky.failures = 2
    with pytest.raises(RequestTooLargeError, match=r"1x128x128.*fewer pictures.*smaller"):
        generator.generate(spec(), AVATAR)
    assert flaky.raised == 2
    assert freed == ["cpu", "cpu"]
    # Not broken: the next request, and the same one, are drawn.
    assert one(generator, spec(width=64, height=64), AVATAR).size == (64, 64)
    assert one(generator, spec(), AVATAR).size == (128, 128)


def test_too_large_repeats_for_the_same_request_without_breaking_anything(
    generator: SDXLGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    flaky = FlakyUNet(generator, monkeypatch)
    for _ in range(3):
        flaky.failures = 2
        with pytest.raises(RequestTooLargeError):
            generator.generate(spec(num_images=2), AVATAR)
    assert one(generator, spec(), AVATAR).size == (128, 128)


def test_a_batch_that_fitted_before_and_no_longer_does_breaks_the_generator(
    generator: SDXLGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two pictures of 128x128 were drawn: one that size or smaller running out
    # of memory twice says the GPU is failing, not the request.
    generator.generate(spec(num_images=2), AVATAR)
    flaky = FlakyUNet(generator, monkeypatch)
    flaky.failures = 2
    with pytest.raises(PipelineBrokenError, match="fitted before"):
        generator.generate(spec(), AVATAR)
    with pytest.raises(PipelineBrokenError):
        generator.generate(spec(width=64, height=64), AVATAR)
    assert flaky.failures == 0


def test_without_guidance_a_batch_is_half_the_footprint(
    generator: SDXLGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Drawn without guidance, one 128x128 picture is one UNet copy; the same
    # picture with guidance is two, larger than anything drawn: too large.
    generator.generate(spec(guidance_scale=1.0), AVATAR)
    flaky = FlakyUNet(generator, monkeypatch)
    flaky.failures = 2
    with pytest.raises(RequestTooLargeError):
        generator.generate(spec(), AVATAR)


class Ballast:
    """Stands in for the activations a forward pass holds when it runs out of memory."""


def test_out_of_memory_lets_go_of_the_failed_pass_before_it_tries_again(
    generator: SDXLGenerator,
) -> None:
    held: list[weakref.ref[Any]] = []
    alive_at_retry: list[bool] = []

    def allocate_then_fail(module: Any, args: Any, kwargs: Any) -> None:
        if not held:
            # A local of the failing frame, as an activation would be.
            activations = torch.empty(1 << 20)
            ballast = Ballast()
            ballast.tensor = activations  # type: ignore[attr-defined]
            held.append(weakref.ref(ballast))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        if not alive_at_retry:
            alive_at_retry.append(held[0]() is not None)

    hook = generator.pipeline.unet.register_forward_pre_hook(allocate_then_fail, with_kwargs=True)
    try:
        assert one(generator, spec(), AVATAR).size == (128, 128)
        # The failed pass's frames were gone before the second try began.
        assert alive_at_retry == [False]
    finally:
        hook.remove()


def test_the_error_of_a_too_large_request_holds_no_frames(
    generator: SDXLGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    FlakyUNet(generator, monkeypatch).failures = 2
    with pytest.raises(RequestTooLargeError) as caught:
        generator.generate(spec(), AVATAR)
    # Nothing chains to the torch error, whose traceback holds the frames.
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None


def test_prompt_tokens_counts_with_the_model_tokenizer(generator: SDXLGenerator) -> None:
    short = generator.prompt_tokens(spec(prompt="a picnic", style_prompt="", guidance_scale=1.0))
    assert 1 <= short <= 4
    story = "a picnic by the lake with my grandparents " * 40
    long = generator.prompt_tokens(spec(prompt=story, style_prompt=""))
    # Eight words a sentence, forty sentences: about 320 tokens of CLIP's BPE.
    assert 300 <= long <= 340
    # The negative counts only with guidance, and then when it is the longest.
    negative = spec(prompt="x", style_prompt="", negative_prompt=story)
    assert generator.prompt_tokens(negative) == long
    unguided = spec(prompt="x", style_prompt="", negative_prompt=story, guidance_scale=1.0)
    assert generator.prompt_tokens(unguided) == 1
