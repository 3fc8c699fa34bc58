"""Out of GPU memory: transient once, fatal twice in a row."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from pipeline.api.config import BUILTIN_TINY, PipelineConfig
from pipeline.api.errors import GenerationOOMError, PipelineBrokenError
from pipeline.engine.generator import SDXLGenerator
from tests.support.assets import load_generator, noise_picture, one
from tests.support.specs import spec

AVATAR = noise_picture(1)


class FlakyUNet:
    """Makes the UNet's forward pass run out of memory the next `failures` times."""

    def __init__(self, generator: SDXLGenerator, monkeypatch: pytest.MonkeyPatch) -> None:
        self.failures = 0
        unet = generator.pipeline.unet
        real = unet.forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            if self.failures:
                self.failures -= 1
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return real(*args, **kwargs)

        monkeypatch.setattr(unet, "forward", forward)


@pytest.fixture
def generator() -> SDXLGenerator:
    return load_generator(PipelineConfig(model_path=BUILTIN_TINY, warmup=False))


def test_one_oom_is_transient_and_the_next_job_works(
    generator: SDXLGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    flaky = FlakyUNet(generator, monkeypatch)
    flaky.failures = 1
    with pytest.raises(GenerationOOMError, match="128x128"):
        generator.generate(spec(), AVATAR)
    assert one(generator, spec(), AVATAR).size == (128, 128)


def test_two_ooms_in_a_row_break_the_generator_for_good(
    generator: SDXLGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    flaky = FlakyUNet(generator, monkeypatch)
    flaky.failures = 2
    with pytest.raises(GenerationOOMError):
        generator.generate(spec(), AVATAR)
    with pytest.raises(PipelineBrokenError, match="2 times in a row"):
        generator.generate(spec(), AVATAR)
    assert flaky.failures == 0
    with pytest.raises(PipelineBrokenError):
        generator.generate(spec(), AVATAR)


def test_a_success_in_between_resets_the_streak(
    generator: SDXLGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    flaky = FlakyUNet(generator, monkeypatch)
    for _ in range(3):
        flaky.failures = 1
        with pytest.raises(GenerationOOMError):
            generator.generate(spec(), AVATAR)
        generator.generate(spec(), AVATAR)
