"""`builtin:blank`: size, latency, batches, stops, and no GIL held while it waits."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from pipeline.api.config import BUILTIN_BLANK, PipelineConfig
from pipeline.api.errors import GenerationStopped
from pipeline.api.factory import create_generator
from pipeline.api.interface import Generator
from pipeline.builtin.blank import BlankGenerator
from tests.support.assets import noise_picture, one
from tests.support.specs import spec

AVATAR = noise_picture(1)


def test_factory_gives_the_blank_generator() -> None:
    generator = create_generator(PipelineConfig(model_path=BUILTIN_BLANK, blank_latency_ms=5))
    assert isinstance(generator, BlankGenerator)
    assert isinstance(generator, Generator)
    assert generator.model_name == BUILTIN_BLANK
    assert generator.native_size == (1024, 1024)


@pytest.mark.parametrize(("width", "height"), [(64, 64), (1024, 512), (320, 2048)])
def test_plain_picture_of_the_requested_size(width: int, height: int) -> None:
    generator = BlankGenerator()
    generator.load()
    picture = one(generator, spec(width=width, height=height), AVATAR)
    assert picture.size == (width, height)
    assert picture.mode == "RGB"
    assert len(picture.getcolors(maxcolors=2) or []) == 1


def test_it_takes_the_configured_latency() -> None:
    generator = BlankGenerator(latency_ms=150)
    started = time.perf_counter()
    one(generator, spec(), AVATAR)
    assert time.perf_counter() - started >= 0.15


def test_waiting_does_not_hold_the_gil() -> None:
    # Four waits of 300 ms overlap only if none holds the GIL while waiting.
    generator = BlankGenerator(latency_ms=300)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=4) as pool:
        pictures = list(pool.map(lambda _: one(generator, spec(), AVATAR), range(4)))
    elapsed = time.perf_counter() - started
    assert len(pictures) == 4
    assert 0.3 <= elapsed < 0.9


def test_negative_latency_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        BlankGenerator(latency_ms=-1)


def test_a_batch_gives_one_picture_per_seed() -> None:
    pictures = BlankGenerator().generate(spec(num_images=3, seed=2**32 - 1, width=64), AVATAR)
    assert [p.size for p in pictures] == [(64, 128)] * 3
    shades = [p.getpixel((0, 0)) for p in pictures]
    # Seeds 2**32 - 1, 0 and 1: each picture its own shade.
    assert shades == [(64 + (2**32 - 1) % 128,) * 3, (64,) * 3, (65,) * 3]


def test_a_stop_ends_the_wait_at_once() -> None:
    generator = BlankGenerator(latency_ms=60_000)
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as pool:
        started = time.perf_counter()
        waiting = pool.submit(generator.generate, spec(), AVATAR, stop)
        stop.set()
        with pytest.raises(GenerationStopped):
            waiting.result(timeout=10)
    assert time.perf_counter() - started < 10


def test_an_unset_stop_waits_the_latency_and_draws() -> None:
    generator = BlankGenerator(latency_ms=100)
    started = time.perf_counter()
    [picture] = generator.generate(spec(), AVATAR, threading.Event())
    assert time.perf_counter() - started >= 0.1
    assert picture.size == (128, 128)
