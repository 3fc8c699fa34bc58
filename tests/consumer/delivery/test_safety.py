"""Output safety through the consumer: builtin:tiny, real tiny checkers, moto."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from consumer.cli.run import load_generator
from consumer.cli.samples import avatar
from consumer.delivery.gpu_thread import GpuThread
from pipeline.api.interface import Generator
from pipeline.api.safety import CheckedGenerator
from tests.support import safety_checkers
from tests.support.aws import Stack
from tests.support.helpers import (
    Observer,
    memory,
    outputs,
    put_input,
    receive_all,
    running,
    send,
    settings,
)
from tests.support.recording import blank
from tests.support.safety_checkers import Recording

# Pictures of different model instances agree within 1 of 255.
TOLERANCE = 1


def job(job_id: str, **fields: Any) -> dict[str, Any]:
    return memory(
        job_id, **{"num_inference_steps": 2, "width": 64, "height": 64, "seed": 7, **fields}
    )


def tiny_settings(tmp_path: Path, **overrides: Any) -> Any:
    return settings(
        model_path="builtin:tiny",
        warmup=False,
        model_cache_dir=str(tmp_path / "cache"),
        **overrides,
    )


async def load(config: Any) -> tuple[Generator, GpuThread]:
    gpu = GpuThread()
    return await load_generator(config, gpu), gpu


async def run_jobs(
    stack: Stack, generator: Generator, config: Any, *bodies: dict[str, Any]
) -> tuple[list[dict[str, Any]], str]:
    """Run `bodies` to their events; also the worker's /metrics text."""
    observer = Observer(stack)
    async with running(generator, config) as handle:
        for body in bodies:
            send(stack, body)
        events = await observer.wait(len(bodies), within=180)
        metrics = handle.worker.metrics.render().decode()
    return sorted(events, key=lambda e: str(e["job_id"])), metrics


def picture(stack: Stack, event: dict[str, Any], index: int = 0) -> Image.Image:
    key = event["data"][index]["s3_uri"].split("/", 3)[3]
    body = stack.client("s3").get_object(Bucket=stack.bucket, Key=key)["Body"].read()
    return Image.open(io.BytesIO(body)).convert("RGB")


def close(a: Image.Image, b: Image.Image) -> bool:
    difference = np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16))
    return bool(difference.max() <= TOLERANCE)


def upload_folder(stack: Stack, folder: Path, prefix: str) -> str:
    s3 = stack.client("s3")
    for path in folder.iterdir():
        s3.put_object(Bucket=stack.bucket, Key=f"{prefix}/{path.name}", Body=path.read_bytes())
    return f"s3://{stack.bucket}/{prefix}"


async def test_a_checker_that_flags_nothing_leaves_pictures_and_seeds_as_before(
    stack: Stack, tmp_path: Path
) -> None:
    put_input(stack, "avatars/user1.png", avatar())
    plain_config = tiny_settings(tmp_path)
    plain, gpu = await load(plain_config)
    [before], _ = await run_jobs(stack, plain, plain_config, job("plain", num_images=2))
    gpu.close()
    folder = safety_checkers.flag_none(tmp_path / "checker")
    config = tiny_settings(tmp_path, safety_checker_path=str(folder))
    checked, gpu = await load(config)
    assert isinstance(checked, CheckedGenerator)
    [after], metrics = await run_jobs(stack, checked, config, job("checked", num_images=2))
    gpu.close()
    assert before["status"] == after["status"] == "succeeded"
    assert [d["seed"] for d in before["data"]] == [d["seed"] for d in after["data"]] == [7, 8]
    for index in (0, 1):
        assert close(picture(stack, before, index), picture(stack, after, index))
    assert "safety" not in before["timings_ms"]
    assert "safety" in after["timings_ms"]
    assert 'illustrator_safety_checked_pictures_total{result="passed"} 2.0' in metrics
    assert 'illustrator_safety_checked_pictures_total{result="flagged"} 0.0' in metrics


async def test_a_checker_that_flags_everything_ends_content_filtered_with_nothing_written(
    stack: Stack, tmp_path: Path
) -> None:
    put_input(stack, "avatars/user1.png", avatar())
    uri = upload_folder(stack, safety_checkers.flag_all(tmp_path / "checker"), "models/safety")
    config = tiny_settings(tmp_path, safety_checker_path=uri, safety_max_redraws=2)
    checked, gpu = await load(config)
    assert isinstance(checked, CheckedGenerator)
    recording = Recording(checked.generator)
    checked.generator = recording
    [event], metrics = await run_jobs(stack, checked, config, job("bad", num_images=2))
    gpu.close()
    assert event["status"] == "failed"
    assert event["error"]["code"] == "content_filtered"
    assert event["error"]["retryable"] is False
    # 1 + SAFETY_MAX_REDRAWS draws, seeds 7 + i + k * 2.
    assert recording.calls == [(7, 2), (9, 2), (11, 2)]
    assert outputs(stack) == []
    [dead] = receive_all(stack, stack.dlq_url)
    assert dead["MessageAttributes"]["error_code"]["StringValue"] == "content_filtered"
    assert 'illustrator_safety_checked_pictures_total{result="flagged"} 6.0' in metrics
    assert "illustrator_safety_redraws_total 4.0" in metrics
    assert 'error_code="content_filtered",kind="memory",status="failed"} 1.0' in metrics


async def test_a_flagged_first_draw_is_replaced_by_its_redraw_and_its_seed_reported(
    stack: Stack, tmp_path: Path
) -> None:
    put_input(stack, "avatars/user1.png", avatar())
    plain_config = tiny_settings(tmp_path)
    plain, gpu = await load(plain_config)
    # The first draw (seed 7) and what its redraw k = 1 gives (7 + 0 + 1 * 1).
    first, redraw = (await run_jobs(stack, plain, plain_config, job("p7"), job("p8", seed=8)))[0]
    gpu.close()
    drawn, again = picture(stack, first), picture(stack, redraw)
    similarity = safety_checkers.cosine(
        safety_checkers.embedding(drawn), safety_checkers.embedding(again)
    )
    assert similarity < 0.998, "the tiny checker cannot tell the two pictures apart"
    folder = safety_checkers.flag_like(tmp_path / "checker", drawn, (1 + similarity) / 2)
    config = tiny_settings(tmp_path, safety_checker_path=str(folder))
    checked, gpu = await load(config)
    [event], metrics = await run_jobs(stack, checked, config, job("safe"))
    gpu.close()
    assert event["status"] == "succeeded"
    assert event["data"][0]["seed"] == 8
    assert event["parameters"]["seed"] == 7
    delivered = picture(stack, event)
    assert close(delivered, again)
    assert not close(delivered, drawn)
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
