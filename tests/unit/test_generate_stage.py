"""The generate stage checks what any generator drew: the count and the size."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest
import structlog
from PIL import Image

from consumer.delivery.generation import generate_on_gpu
from consumer.delivery.gpu_thread import GpuThread
from consumer.delivery.job import Job, Prepared
from consumer.delivery.job_state import JobState
from consumer.errors import GenerationFailed
from consumer.metrics import Metrics
from pipeline.api.safety import Drawn
from pipeline.api.spec import GenerationSpec
from pipeline.builtin.blank import BlankGenerator
from tests.support.fakes import FakeClock, message
from tests.support.specs import spec

SPEC = spec(width=48, height=32, num_images=2)


class Miscounting(BlankGenerator):
    """Draws what it is told to, whatever the spec asked for."""

    def __init__(self, count: int, size: tuple[int, int]) -> None:
        super().__init__()
        self.count, self.size = count, size

    def generate(
        self, spec: GenerationSpec, image: Image.Image, stop: threading.Event | None = None
    ) -> list[Image.Image]:
        return [Image.new("RGB", self.size) for _ in range(self.count)]


class Compiling(BlankGenerator):
    """Builds `graphs` graphs in each job, as a shape the warm-up missed would."""

    def __init__(self, graphs: int) -> None:
        super().__init__()
        self.graphs, self.graphs_built = graphs, 7

    def generate(
        self, spec: GenerationSpec, image: Image.Image, stop: threading.Event | None = None
    ) -> list[Image.Image]:
        self.graphs_built += self.graphs
        return super().generate(spec, image, stop)


async def _generate(generator: BlankGenerator, metrics: Metrics | None = None) -> tuple[Drawn, Job]:
    gpu = GpuThread()
    settings = SimpleNamespace(generation_timeout_s=30.0)
    env: Any = SimpleNamespace(
        gpu=gpu,
        generator=generator,
        settings=settings,
        stop_grace_s=5.0,
        metrics=metrics or Metrics(),
    )
    heartbeat: Any = None
    job = Job(message(), FakeClock(), heartbeat)
    prepared = Prepared(None, SPEC, [], "", Image.new("RGB", (8, 8)))  # type: ignore[arg-type]
    try:
        return await generate_on_gpu(env, job, prepared, None), job
    finally:
        gpu.close()


async def test_pictures_as_asked_pass() -> None:
    drawn, job = await _generate(BlankGenerator())
    assert [p.size for p in drawn.pictures] == [(48, 32), (48, 32)]
    assert drawn.seeds == [SPEC.seed, SPEC.seed + 1]
    assert job.state is JobState.GENERATING
    assert "generate" in job.timings


@pytest.mark.parametrize(
    ("count", "size", "said"),
    [
        (1, (48, 32), "drew 1 pictures, not 2"),
        (2, (32, 48), "drew 32x48, not 48x32"),
    ],
)
async def test_a_wrong_count_or_size_is_a_failed_generation(
    count: int, size: tuple[int, int], said: str
) -> None:
    with pytest.raises(GenerationFailed, match=said):
        await _generate(Miscounting(count, size))


@pytest.mark.parametrize("graphs", [0, 2])
async def test_the_graphs_a_job_built_are_counted_and_logged(graphs: int) -> None:
    metrics = Metrics()
    with structlog.testing.capture_logs() as logs:
        drawn, _ = await _generate(Compiling(graphs), metrics)
    assert drawn.graphs == graphs
    assert metrics.registry.get_sample_value("illustrator_graphs_built_total") == graphs
    [finished] = [entry for entry in logs if entry["event"] == "generation_finished"]
    assert finished["graphs"] == graphs
    # A graph built in a job is news: a shape the warm-up did not foresee.
    assert finished["log_level"] == ("warning" if graphs else "info")
