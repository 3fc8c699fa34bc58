"""A compiled UNet compiles during the warm-up and never again, whatever a request asks for.

The eager backend traces as inductor does but generates no code, so the
count of graphs is production's while the test takes a minute, not hours;
the mode (``TORCH_COMPILE_MODE``) is set as a worker would set it. What is
counted is torch's own tally of compiled graphs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch._dynamo.utils import counters

from consumer.contract.request import MAX_IMAGES
from pipeline.api.config import BUILTIN_TINY, SCHEDULERS, PipelineConfig
from pipeline.api.safety import draw
from pipeline.api.spec import JobKind
from pipeline.engine.generator import SDXLGenerator
from pipeline.engine.runtime.compiling import GRAPHS
from pipeline.engine.runtime.schedulers import configure_scheduler
from tests.support.assets import load_generator, noise_picture
from tests.support.specs import spec

# Widths and heights a request may give (multiples of 64 up to 2048): the
# ends, and between them sizes on either side of the 20480-value threshold
# where oneDNN would take over a one-picture convolution on the CPU. Every
# pair of the 32 would take hours on 2 shared cores (2048x2048 alone is 16 s
# a call); 640x640, past that threshold in every convolution of the tiny
# UNet, stands for pictures large both ways.
SIDES = (64, 128, 192, 320, 640, 1024, 1536, 2048)
# English prompt and style at their longest come to about 16 77-token
# windows; 64 stands for any text beyond that.
WINDOWS = (1, 2, 8, 16, 64)
CONFIG = PipelineConfig(
    model_path=BUILTIN_TINY,
    torch_compile=True,
    torch_compile_mode="max-autotune",
    torch_compile_backend="eager",
    warmup=True,
)


pytestmark = pytest.mark.timeout(1200)


def graphs() -> int:
    return int(counters["stats"]["unique_graphs"])


# The generator's own count (all graphs this process built) before the fixture.
GRAPHS_AT_START = [0]


@pytest.fixture(scope="module")
def compiled() -> Iterator[tuple[SDXLGenerator, int]]:
    """The tiny model compiled and warmed up, and the graphs that took."""
    torch._dynamo.reset()
    counters.clear()
    GRAPHS_AT_START[0] = GRAPHS.total
    generator = load_generator(CONFIG)
    yield generator, graphs()
    torch._dynamo.reset()


class UNetCall:
    """One real call's arguments to the UNet, reshaped to any batch, size and prompt length."""

    def __init__(self, generator: SDXLGenerator) -> None:
        self.unet = generator.pipeline.unet
        self.kwargs: dict[str, Any] = {}

        def capture(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
            if not self.kwargs:
                self.timestep = args[1] if len(args) > 1 else kwargs["timestep"]
                self.kwargs = kwargs

        hook = self.unet.register_forward_pre_hook(capture, with_kwargs=True)
        try:
            generator.generate(spec(num_inference_steps=1), noise_picture(1))
        finally:
            hook.remove()

    def __call__(
        self, batch: int, width: int, height: int, windows: int = 1, timestep: Any = None
    ) -> None:
        def rows(tensor: torch.Tensor) -> torch.Tensor:
            return tensor[:1].repeat(batch, *[1] * (tensor.dim() - 1))

        # As in the pipeline, every tensor is made in inference mode.
        with torch.inference_mode():
            added = {
                key: [rows(t) for t in value] if isinstance(value, list) else rows(value)
                for key, value in self.kwargs["added_cond_kwargs"].items()
            }
            text = rows(self.kwargs["encoder_hidden_states"])[:, :77].repeat(1, windows, 1)
            sample = torch.randn(batch, 4, height // 8, width // 8)
            step = self.timestep if timestep is None else timestep.clone()
            # Every keyword the pipeline passes, as it passes them.
            arguments = {
                **self.kwargs,
                "encoder_hidden_states": text,
                "added_cond_kwargs": added,
            }
            self.unet(sample, step, **arguments)


def test_the_warm_up_compiles_one_graph_per_batch_class(
    compiled: tuple[SDXLGenerator, int],
) -> None:
    _, warmed = compiled
    # A batch of one, and every larger batch; the tiny model has one adapter.
    assert warmed == 2


def test_no_size_batch_prompt_length_or_timestep_type_compiles_again(
    compiled: tuple[SDXLGenerator, int],
) -> None:
    generator, warmed = compiled
    call = UNetCall(generator)
    # A guided batch of n pictures is 2n in the UNet; unguided, n. A batch
    # of one has a graph of its own, so each size goes through both.
    for batch in (1, 2):
        for side in SIDES:
            call(batch, side, 64)
            call(batch, 64, side)
        call(batch, 640, 640)
    for batch in range(1, 2 * MAX_IMAGES + 1):
        call(batch, 128, 192)
    for windows in WINDOWS:
        call(1, 128, 128, windows)
        call(2, 128, 128, windows)
    for timestep in (torch.tensor(999), torch.tensor(999.0), torch.tensor(1, dtype=torch.int32)):
        call(2, 128, 128, timestep=timestep)
    assert graphs() == warmed


def test_whole_jobs_of_every_scheduler_and_kind_compile_nothing_new(
    compiled: tuple[SDXLGenerator, int],
) -> None:
    generator, _ = compiled
    # Against what exists now, so that this test says its own failure.
    before = graphs()
    avatar = noise_picture(2)
    own = generator.pipeline.scheduler
    try:
        # DPM-Solver, DDIM, LCM and TCD count their timesteps in int64,
        # the Euler schedulers in float32.
        for scheduler in SCHEDULERS:
            configure_scheduler(
                generator.pipeline, dataclasses.replace(CONFIG, scheduler=scheduler)
            )
            for kind in JobKind:
                generator.generate(spec(kind=kind, num_inference_steps=2), avatar)
            generator.generate(
                spec(num_inference_steps=2, guidance_scale=1.0, width=64, height=320), avatar
            )
            generator.generate(
                spec(num_inference_steps=1, num_images=3, prompt="river " * 200), avatar
            )
    finally:
        generator.pipeline.scheduler = own
    assert graphs() == before


def test_the_graph_count_is_torchs_own_tally(compiled: tuple[SDXLGenerator, int]) -> None:
    generator, _ = compiled
    # Counted from torch's compile callbacks, the count survives a
    # torch._dynamo.reset() (which clears the callbacks) and agrees with it.
    assert generator.graphs_built - graphs() == GRAPHS_AT_START[0]


def test_an_unforeseen_guard_after_the_warm_up_runs_uncompiled(
    compiled: tuple[SDXLGenerator, int],
) -> None:
    generator, _ = compiled
    call = UNetCall(generator)
    before, built = graphs(), generator.graphs_built
    # A keyword no warm-up passed: a guard the graphs do not meet, as one
    # inductor adds on a GPU could be. Compiling for it would take minutes.
    call.kwargs = {**call.kwargs, "return_dict": True}
    call(2, 128, 128)
    assert graphs() == before
    assert generator.graphs_built == built


def test_jobs_report_the_graphs_they_built(compiled: tuple[SDXLGenerator, int]) -> None:
    # After the tests that count on the warm-up's graphs alone: it builds one.
    generator, _ = compiled
    avatar = noise_picture(2)
    assert draw(generator, spec(num_images=3, prompt="harbour " * 120), avatar).graphs == 0
    # Without the stance, a size nobody named compiles, and the job says so;
    # a larger batch and a longer prompt still use the graph there is.
    assert generator._compiled is not None
    generator._compiled.frozen = False
    try:
        assert draw(generator, spec(width=192, num_inference_steps=1), avatar).graphs == 1
        assert draw(generator, spec(num_images=4, prompt="sea " * 300), avatar).graphs == 0
    finally:
        generator._compiled.frozen = True


def test_each_compiled_size_is_warmed_up_for_each_batch_class() -> None:
    generator = load_generator(
        dataclasses.replace(CONFIG, warmup=False, torch_compile_sizes="128x128,256x192")
    )
    drawn: list[tuple[float, int, int, int]] = []

    def generate(job: Any, image: Any, stop: Any = None) -> list[Any]:
        drawn.append((job.guidance_scale, job.num_images, job.width, job.height))
        return []

    generator.generate = generate  # type: ignore[method-assign]
    generator._warm_up()
    assert drawn == [(1.0, 1, 128, 128), (5.0, 1, 128, 128), (1.0, 1, 256, 192), (5.0, 1, 256, 192)]
