"""Several pictures in one call, and a generation stopped at a step boundary."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from pipeline.api.config import BUILTIN_TINY, PipelineConfig
from pipeline.api.errors import GenerationStopped
from pipeline.engine.generator import SDXLGenerator
from tests.support.assets import load_generator, noise_picture, one, pixels
from tests.support.specs import spec

AVATAR = noise_picture(1)
# The contract's promise on a CPU: batch pictures differ from their
# one-picture twins by at most 1 of 255 in any pixel (builtin:tiny, 4 steps,
# 128x128, float32: the rounding of batched matrix products; the decode is
# one picture at a time either way).
BATCH_TOLERANCE = 1


@pytest.fixture
def fresh() -> SDXLGenerator:
    """A generator of its own, for tests that patch its pipeline."""
    return load_generator(PipelineConfig(model_path=BUILTIN_TINY, warmup=False))


def counting(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[int]:
    """Count calls of ``owner.name``; the returned list grows by one per call."""
    calls: list[int] = []
    real: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return calls


def test_picture_i_of_a_batch_is_the_single_picture_of_seed_plus_i(tiny: SDXLGenerator) -> None:
    job = spec(num_images=3, num_inference_steps=4, seed=2**32 - 2)
    pictures = tiny.generate(job, AVATAR)
    assert len(pictures) == 3
    assert all(p.mode == "RGB" and p.size == (128, 128) for p in pictures)
    # The seeds wrap: 2**32 - 2, 2**32 - 1, then 0.
    for picture, seed in zip(pictures, (2**32 - 2, 2**32 - 1, 0), strict=True):
        single = one(tiny, spec(num_inference_steps=4, seed=seed), AVATAR)
        assert np.abs(pixels(picture) - pixels(single)).max() <= BATCH_TOLERANCE
    assert np.abs(pixels(pictures[0]) - pixels(pictures[1])).mean() > 1.0


def test_a_batch_is_denoised_in_one_call_and_decoded_one_picture_at_a_time(
    fresh: SDXLGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[int] = []
    real = fresh.pipeline.vae.decode

    def decode(latents: Any, *args: Any, **kwargs: Any) -> Any:
        decoded.append(latents.shape[0])
        return real(latents, *args, **kwargs)

    monkeypatch.setattr(fresh.pipeline.vae, "decode", decode)
    unet_calls = counting(monkeypatch, fresh.pipeline.unet, "forward")
    assert len(fresh.generate(spec(num_images=4, num_inference_steps=2), AVATAR)) == 4
    assert len(unet_calls) == 2
    # The decoder's memory is one picture's, whatever the batch.
    assert decoded == [1, 1, 1, 1]


def stop_at_step(
    monkeypatch: pytest.MonkeyPatch, generator: SDXLGenerator, stop: threading.Event, step: int
) -> list[int]:
    """Set `stop` while the scheduler runs step `step` (from 1); the steps counted."""
    scheduler = generator.pipeline.scheduler
    steps: list[int] = []
    real = scheduler.step

    def counted(*args: Any, **kwargs: Any) -> Any:
        steps.append(1)
        if len(steps) == step:
            stop.set()
        return real(*args, **kwargs)

    monkeypatch.setattr(scheduler, "step", counted)
    return steps


def test_stop_ends_the_run_at_the_next_step_without_decoding(
    fresh: SDXLGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    stop = threading.Event()
    steps = stop_at_step(monkeypatch, fresh, stop, 3)
    decodes = counting(monkeypatch, fresh.pipeline.vae, "decode")
    with pytest.raises(GenerationStopped, match="after step 3 of 20"):
        fresh.generate(spec(num_inference_steps=20, num_images=2), AVATAR, stop)
    assert len(steps) == 3
    assert not decodes
    # Usable again, the same generator and the same (cleared) event.
    stop.clear()
    pictures = fresh.generate(spec(num_inference_steps=4), AVATAR, stop)
    assert len(steps) == 3 + 4
    assert [p.size for p in pictures] == [(128, 128)]


def test_a_stop_from_another_thread_lands_mid_run(
    fresh: SDXLGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    stop = threading.Event()
    first_step = threading.Event()
    scheduler = fresh.pipeline.scheduler
    real = scheduler.step
    steps: list[int] = []

    def step(*args: Any, **kwargs: Any) -> Any:
        steps.append(1)
        first_step.set()
        # The first step holds until the stop is set, so it lands during it
        # however fast the steps run; a missing stop fails after 30 s.
        assert stop.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(scheduler, "step", step)
    outcome: list[BaseException] = []

    def work() -> None:
        try:
            fresh.generate(spec(num_inference_steps=20), AVATAR, stop)
        except BaseException as error:  # handed to the test thread
            outcome.append(error)

    worker = threading.Thread(target=work)
    worker.start()
    assert first_step.wait(60)
    stop.set()
    worker.join(60)
    assert not worker.is_alive()
    [error] = outcome
    assert isinstance(error, GenerationStopped)
    assert len(steps) == 1


def test_a_stop_set_before_the_call_runs_no_step(
    fresh: SDXLGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    stop = threading.Event()
    stop.set()
    unet_calls = counting(monkeypatch, fresh.pipeline.unet, "forward")
    with pytest.raises(GenerationStopped, match="before its first step"):
        fresh.generate(spec(), AVATAR, stop)
    assert not unet_calls
    assert one(fresh, spec(), AVATAR).size == (128, 128)
