"""At start, on a GPU, the largest request the settings allow is drawn once and must fit.

There is no GPU here: a fake memory probe stands in for the allocator's
figures, and the real tiny model draws the largest requests of a small
``max_batch_pixels`` (four 128x128 pictures, one 256x256).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import structlog
import torch

from pipeline.api.config import BUILTIN_TINY, PipelineConfig
from pipeline.api.errors import StartRefusedError
from pipeline.engine import generator as generator_module
from pipeline.engine.runtime.fitting import HEADROOM, GiB
from pipeline.engine.untyped import diffusers
from tests.support.assets import load_generator

CONFIG = PipelineConfig(
    model_path=BUILTIN_TINY, warmup=False, max_batch_pixels=4 * 128 * 128, vae_tiling_pixels=0
)


class FakeMemory:
    """A GPU of `total` bytes whose every request peaks at `peak` bytes."""

    def __init__(self, peak: int, total: int = 24 * GiB, outside: int = GiB // 2) -> None:
        self.peak, self._total, self.outside = peak, total, outside
        self.resets = 0

    def reset_peak(self) -> None:
        self.resets += 1

    def peak_reserved(self) -> int:
        return self.peak

    def outside_allocator(self) -> int:
        return self.outside

    def total(self) -> int:
        return self._total


class Recorder:
    """The UNet's (batch, latent height, latent width) and the decoder's per call."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.unet: list[tuple[int, int, int]] = []
        self.decodes: list[tuple[int, int, int]] = []
        self.fail_at: tuple[int, int, int] | None = None
        unet = diffusers.UNet2DConditionModel
        vae = diffusers.AutoencoderKL
        real_unet, real_decode = unet.forward, vae.decode

        def forward(module: Any, sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            shape = (sample.shape[0], sample.shape[2], sample.shape[3])
            self.unet.append(shape)
            if shape == self.fail_at:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
            return real_unet(module, sample, *args, **kwargs)

        def decode(module: Any, latents: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            self.decodes.append((latents.shape[0], latents.shape[2], latents.shape[3]))
            return real_decode(module, latents, *args, **kwargs)

        monkeypatch.setattr(unet, "forward", forward)
        monkeypatch.setattr(vae, "decode", decode)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    return Recorder(monkeypatch)


def with_probe(monkeypatch: pytest.MonkeyPatch, memory: FakeMemory) -> None:
    monkeypatch.setattr(generator_module, "memory_probe", lambda device: memory)


def test_one_guided_step_of_each_largest_request_and_its_decodes(
    monkeypatch: pytest.MonkeyPatch, recorder: Recorder
) -> None:
    memory = FakeMemory(peak=12 * GiB)
    with_probe(monkeypatch, memory)
    with structlog.testing.capture_logs() as logs:
        load_generator(CONFIG)
    # Four native pictures (guided: a UNet batch of 8), then the largest
    # square, one step each, each decoded one picture at a time.
    assert recorder.unet == [(8, 16, 16), (2, 32, 32)]
    assert recorder.decodes == [(1, 16, 16)] * 4 + [(1, 32, 32)]
    assert memory.resets == 2
    fits = [entry for entry in logs if entry["event"] == "largest_request_fits"]
    assert [entry["request"] for entry in fits] == ["4 x 128x128", "1 x 256x256"]
    assert fits[0]["peak_reserved_gib"] == 12.0


def test_the_largest_size_decodes_in_tiles_as_its_jobs_would(
    monkeypatch: pytest.MonkeyPatch, recorder: Recorder
) -> None:
    with_probe(monkeypatch, FakeMemory(peak=GiB))
    tiled: list[int] = []
    vae = diffusers.AutoencoderKL
    real = vae.tiled_decode

    def tiled_decode(module: Any, latents: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        tiled.append(latents.shape[-1])
        return real(module, latents, *args, **kwargs)

    monkeypatch.setattr(vae, "tiled_decode", tiled_decode)
    load_generator(dataclasses.replace(CONFIG, vae_tiling_pixels=128 * 128))
    assert tiled == [32]


def test_a_peak_past_the_gpu_refuses_to_start_with_the_figures_and_what_to_lower(
    monkeypatch: pytest.MonkeyPatch, recorder: Recorder
) -> None:
    total = 24 * GiB
    # Just past what may be used: the peak, what the allocator does not hold,
    # and the headroom.
    peak = int(total * (1 - HEADROOM)) - GiB // 2 + 1
    with_probe(monkeypatch, FakeMemory(peak=peak, total=total))
    with pytest.raises(StartRefusedError) as refused:
        load_generator(CONFIG)
    message = str(refused.value)
    assert "the largest request these settings allow (4 x 128x128) does not fit" in message
    assert "23.3 GiB usable of 24.0 GiB" in message
    assert "MAX_BATCH_PIXELS" in message
    assert "VAE_TILING_PIXELS" in message
    assert recorder.unet == [(8, 16, 16)]


def test_just_within_the_gpu_fits(monkeypatch: pytest.MonkeyPatch, recorder: Recorder) -> None:
    total = 24 * GiB
    with_probe(monkeypatch, FakeMemory(peak=int(total * (1 - HEADROOM)) - GiB // 2, total=total))
    load_generator(CONFIG)
    assert len(recorder.unet) == 2


def test_running_out_of_memory_in_the_proof_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, recorder: Recorder
) -> None:
    with_probe(monkeypatch, FakeMemory(peak=20 * GiB))
    recorder.fail_at = (2, 32, 32)
    refusal = r"\(1 x 256x256\) does not fit this GPU: it ran out"
    with pytest.raises(StartRefusedError, match=refusal):
        load_generator(CONFIG)


def test_on_the_cpu_nothing_is_proved(recorder: Recorder) -> None:
    load_generator(CONFIG)
    assert recorder.unet == []
