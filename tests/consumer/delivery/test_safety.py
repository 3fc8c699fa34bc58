"""Output safety through the consumer: builtin:tiny, real tiny checkers, moto."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from consumer.cli.run import load_generator
from consumer.cli.samples import avatar
from consumer.delivery.gpu_thread import GpuThread
from consumer.settings import Settings
from pipeline.api.interface import Generator
from pipeline.api.safety import CheckedGenerator
from tests.support import safety_checkers
from tests.support.assets import alike
from tests.support.aws import Stack
from tests.support.helpers import Observer, memory, running, settings
from tests.support.recording import Recording, blank


@pytest.fixture(autouse=True)
def _avatar(stack: Stack) -> None:
    """Every test draws from the sample avatar, a face rather than one flat colour."""
    stack.put_input("avatars/user1.png", avatar())


def job(job_id: str, **fields: Any) -> dict[str, Any]:
    return memory(
        job_id, **{"num_inference_steps": 2, "width": 64, "height": 64, "seed": 7, **fields}
    )


@dataclass
class Ran:
    """What a worker on builtin:tiny made of some requests."""

    events: list[dict[str, Any]]  # by job id
    metrics: str  # the worker's /metrics text
    generator: Generator
    recording: Recording | None  # the checker's generator, when recorded


async def run_tiny(
    stack: Stack, tmp_path: Path, *bodies: dict[str, Any], record: bool = False, **overrides: Any
) -> Ran:
    """Load builtin:tiny with the settings `overrides` (the checker's generator
    wrapped in a :class:`Recording` when `record`), run `bodies` to their events."""
    config = settings(
        model_path="builtin:tiny",
        warmup=False,
        model_cache_dir=str(tmp_path / "cache"),
        **overrides,
    )
    gpu = GpuThread()
    try:
        generator = await load_generator(config, gpu)
        recording = None
        if record:
            assert isinstance(generator, CheckedGenerator)
            generator.generator = recording = Recording(generator.generator)
        events, metrics = await run_jobs(stack, generator, config, *bodies)
    finally:
        gpu.close()
    return Ran(events, metrics, generator, recording)


async def run_jobs(
    stack: Stack, generator: Generator, config: Settings, *bodies: dict[str, Any]
) -> tuple[list[dict[str, Any]], str]:
    """Run `bodies` to their events; also the worker's /metrics text."""
    observer = Observer(stack)
    async with running(generator, config) as handle:
        for body in bodies:
            stack.send(body)
        events = await observer.wait(len(bodies), within=180)
        metrics = handle.worker.metrics.render().decode()
    return sorted(events, key=lambda e: str(e["job_id"])), metrics


def picture(stack: Stack, event: dict[str, Any], index: int = 0) -> Image.Image:
    key = event["data"][index]["s3_uri"].split("/", 3)[3]
    body = stack.client("s3").get_object(Bucket=stack.bucket, Key=key)["Body"].read()
    return Image.open(io.BytesIO(body)).convert("RGB")


async def test_a_checker_that_flags_nothing_leaves_pictures_and_seeds_as_before(
    stack: Stack, tmp_path: Path
) -> None:
    [before] = (await run_tiny(stack, tmp_path, job("plain", num_images=2))).events
    folder = safety_checkers.flag_none(tmp_path / "checker")
    checked = await run_tiny(
        stack, tmp_path, job("checked", num_images=2), safety_checker_path=str(folder)
    )
    assert isinstance(checked.generator, CheckedGenerator)
    [after], metrics = checked.events, checked.metrics
    assert before["status"] == after["status"] == "succeeded"
    assert [d["seed"] for d in before["data"]] == [d["seed"] for d in after["data"]] == [7, 8]
    for index in (0, 1):
        assert alike(picture(stack, before, index), picture(stack, after, index))
    assert "safety" not in before["timings_ms"]
    assert "safety" in after["timings_ms"]
    assert 'illustrator_safety_checked_pictures_total{result="passed"} 2.0' in metrics
    assert 'illustrator_safety_checked_pictures_total{result="flagged"} 0.0' in metrics


async def test_a_checker_that_flags_everything_ends_content_filtered_with_nothing_written(
    stack: Stack, tmp_path: Path
) -> None:
    uri = stack.upload_folder(safety_checkers.flag_all(tmp_path / "checker"), "models/safety")
    ran = await run_tiny(
        stack,
        tmp_path,
        job("bad", num_images=2),
        record=True,
        safety_checker_path=uri,
        safety_max_redraws=2,
    )
    [event], metrics = ran.events, ran.metrics
    assert event["status"] == "failed"
    assert event["error"]["code"] == "content_filtered"
    assert event["error"]["retryable"] is False
    # 1 + SAFETY_MAX_REDRAWS draws, seeds 7 + i + k * 2.
    assert ran.recording is not None
    assert ran.recording.draws == [(7, 2), (9, 2), (11, 2)]
    assert stack.outputs() == []
    [dead] = stack.receive_all(stack.dlq_url)
    assert dead["MessageAttributes"]["error_code"]["StringValue"] == "content_filtered"
    assert 'illustrator_safety_checked_pictures_total{result="flagged"} 6.0' in metrics
    assert "illustrator_safety_redraws_total 4.0" in metrics
    assert 'error_code="content_filtered",kind="memory",status="failed"} 1.0' in metrics


async def test_a_flagged_first_draw_is_replaced_by_its_redraw_and_its_seed_reported(
    stack: Stack, tmp_path: Path
) -> None:
    # The first draw (seed 7) and what its redraw k = 1 gives (7 + 0 + 1 * 1).
    first, redraw = (await run_tiny(stack, tmp_path, job("p7"), job("p8", seed=8))).events
    drawn, again = picture(stack, first), picture(stack, redraw)
    similarity = safety_checkers.cosine(
        safety_checkers.embedding(drawn), safety_checkers.embedding(again)
    )
    assert similarity < 0.998, "the tiny checker cannot tell the two pictures apart"
    folder = safety_checkers.flag_like(tmp_path / "checker", drawn, (1 + similarity) / 2)
    checked = await run_tiny(stack, tmp_path, job("safe"), safety_checker_path=str(folder))
    [event], metrics = checked.events, checked.metrics
    assert event["status"] == "succeeded"
    assert event["data"][0]["seed"] == 8
    assert event["parameters"]["seed"] == 7
    delivered = picture(stack, event)
    assert alike(delivered, again)
    assert not alike(delivered, drawn)
    head = stack.client("s3").head_object(
        Bucket=stack.bucket, Key="generated/user1/memory_safe.png"
    )
    assert head["Metadata"]["seed"] == "8"
    assert 'illustrator_safety_checked_pictures_total{result="flagged"} 1.0' in metrics
    assert "illustrator_safety_redraws_total 1.0" in metrics
    # Sent again, it is reused: the request's seed stays the request's, the
    # picture's the redraw's.
    [reused], _ = await run_jobs(stack, blank(), settings(), job("safe"))
    assert reused["reused"] is True
    assert reused["parameters"]["seed"] == 7
    assert reused["data"][0]["seed"] == 8
