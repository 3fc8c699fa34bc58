"""The health sidecar (contract section 5): endpoints, states, metrics, no secrets."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from consumer.clock import SystemClock
from consumer.delivery.gpu_thread import GpuThread
from consumer.delivery.options import WorkerOptions
from consumer.delivery.worker import EXIT_FATAL, EXIT_OK
from consumer.delivery.worker_state import READY_MESSAGE, StatusBoard, WorkerState
from consumer.metrics import Metrics
from consumer.service.sidecar import Sidecar
from consumer.service.wiring import serve
from consumer.settings import Settings
from pipeline.api.errors import ModelLoadError
from pipeline.api.interface import Generator
from tests.support.aws import Stack
from tests.support.fakes import FakeClock
from tests.support.helpers import Observer, eventually, memory, settings
from tests.support.recording import blank

SECRET = "very-secret-auth-token"


def _state(board: StatusBoard) -> WorkerState:
    return board.state


def test_state_is_derived_from_the_facts() -> None:
    busy = False
    board = StatusBoard(FakeClock(), "w1", busy_probe=lambda: busy)
    assert _state(board) is WorkerState.STARTING
    board.loaded("builtin:blank")
    assert _state(board) is WorkerState.STARTING  # the loop has not started
    board.loop_started()
    assert _state(board) is WorkerState.READY
    busy = True
    assert _state(board) is WorkerState.BUSY
    board.troubled("ReceiveMessage: AWS ReceiveMessage failed: ExpiredToken")
    assert _state(board) is WorkerState.UNHEALTHY
    assert board.live
    board.polled()
    assert _state(board) is WorkerState.BUSY
    board.drain("SIGTERM")
    assert _state(board) is WorkerState.DRAINING
    board.fail("the GPU is wedged")
    assert _state(board) is WorkerState.UNHEALTHY
    assert not board.live


@pytest.fixture
async def sidecar() -> AsyncIterator[tuple[StatusBoard, Metrics, str]]:
    board, metrics = StatusBoard(SystemClock(), "w1"), Metrics()
    server = Sidecar(board, metrics, "127.0.0.1", 0)
    await server.start()
    try:
        yield board, metrics, server.url
    finally:
        await server.stop()


async def _get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


async def test_endpoints_follow_the_state(sidecar: tuple[StatusBoard, Metrics, str]) -> None:
    board, _, url = sidecar
    status, body = await _get(f"{url}/health")
    assert (status, body["status"]) == (503, "starting")
    assert (await _get(f"{url}/livez"))[0] == 200
    assert (await _get(f"{url}/readyz"))[0] == 503

    board.loaded("builtin:blank")
    board.loop_started()
    for path in ("/health", "/health/"):
        status, body = await _get(url + path)
        assert status == 200
        assert body["status"] == "healthy"
        assert body["message"] == READY_MESSAGE
        assert body["state"] == "ready"
        assert body["model"] == "builtin:blank"
    assert (await _get(f"{url}/readyz"))[0] == 200

    board.drain("SIGTERM")
    status, body = await _get(f"{url}/health")
    assert (status, body["status"]) == (503, "draining")
    assert (await _get(f"{url}/readyz"))[0] == 503
    assert (await _get(f"{url}/livez"))[0] == 200

    board.fail("out of memory twice")
    status, body = await _get(f"{url}/health")
    assert (status, body["status"]) == (503, "unhealthy")
    assert (await _get(f"{url}/livez"))[0] == 503


async def test_metrics_are_prometheus_text(sidecar: tuple[StatusBoard, Metrics, str]) -> None:
    _, metrics, url = sidecar
    metrics.job_finished("memory", "succeeded")
    metrics.job_finished(None, "failed", "invalid_request")
    metrics.observe({"generate": 1500, "total": 1800})
    metrics.model_load_seconds.set(12.5)
    status, text = await _get(f"{url}/metrics")
    assert status == 200
    assert 'illustrator_jobs_total{error_code="",kind="memory",status="succeeded"} 1.0' in text
    assert (
        'illustrator_jobs_total{error_code="invalid_request",kind="unknown",status="failed"}'
        in text
    )
    assert 'illustrator_stage_duration_seconds_bucket{le="2.5",stage="generate"} 1.0' in text
    assert "illustrator_jobs_in_flight 0.0" in text
    assert "illustrator_model_load_seconds 12.5" in text
    assert "illustrator_last_poll_timestamp_seconds" in text
    assert "# TYPE illustrator_retries_total counter" in text


def test_each_worker_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.job_finished("memory", "succeeded")
    assert b'kind="memory"' in first.render()
    assert b'kind="memory"' not in second.render()


async def _answers(url: str) -> str:
    texts = []
    for path in ("/health", "/livez", "/readyz", "/metrics"):
        texts.append(str((await _get(url + path))[1]))
    return "\n".join(texts)


async def test_serve_reports_starting_then_healthy_then_draining(stack: Stack) -> None:
    stack.put_input("avatars/user1.png")
    loaded = threading.Event()
    port: list[int] = []
    generator = blank()

    async def loader(config: Settings, gpu: GpuThread) -> Generator:
        def load() -> Generator:
            loaded.wait(10)
            return generator

        return await gpu.run(load)

    config = settings(auth_enabled=True, auth_token=SECRET)
    original_start = Sidecar.start

    async def start(self: Sidecar) -> int:
        port.append(await original_start(self))
        return port[-1]

    observer = Observer(stack)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Sidecar, "start", start)
        task = asyncio.create_task(
            serve(config, loader, options=WorkerOptions(poll_wait_s=1), handle_signals=False)
        )
        await eventually(lambda: port, what="the sidecar")
    url = f"http://127.0.0.1:{port[0]}"
    status, body = await _get(f"{url}/health")
    assert (status, body["status"], body["message"]) == (503, "starting", "Loading the model")
    loaded.set()
    await eventually(lambda: _status(url, 200), what="healthy")
    stack.send(memory("serve-1"), token=SECRET)
    await observer.wait(1)
    _, text = await _get(f"{url}/metrics")
    assert 'illustrator_jobs_total{error_code="",kind="memory",status="succeeded"} 1.0' in text
    assert SECRET not in await _answers(url)
    assert "testing-secret-key" not in await _answers(url)
    task.cancel()  # ends like a process killed; the sidecar closes with it
    with pytest.raises(asyncio.CancelledError):
        await task


async def _status(url: str, expected: int) -> bool:
    return (await _get(f"{url}/health"))[0] == expected


async def test_serve_exits_non_zero_when_the_model_cannot_load(stack: Stack) -> None:
    async def loader(config: Settings, gpu: GpuThread) -> Generator:
        raise ModelLoadError("no weights at /nowhere")

    code = await serve(settings(), loader, handle_signals=False)
    assert code == EXIT_FATAL


async def test_serve_with_companions_that_drain_the_worker(stack: Stack) -> None:
    seen: list[str] = []

    async def loader(config: Settings, gpu: GpuThread) -> Generator:
        return blank()

    async def watcher(worker: Any) -> None:
        await eventually(lambda: worker.state is WorkerState.READY, what="ready")
        worker.request_drain("spot interruption notice")
        code = await worker.wait_stopped()
        seen.append(f"lifecycle action completed after exit {code}")

    code = await serve(settings(), loader, companions=[watcher], handle_signals=False)
    assert code == EXIT_OK
    assert seen == ["lifecycle action completed after exit 0"]


async def test_a_signal_while_the_model_loads_exits_zero_at_once(stack: Stack) -> None:
    release = threading.Event()

    async def loader(config: Settings, gpu: GpuThread) -> Generator:
        def load() -> Generator:
            release.wait(30)
            return blank()

        return await gpu.run(load)

    task = asyncio.create_task(serve(settings(), loader))
    try:
        await eventually(lambda: _has_handler(signal.SIGTERM), what="the handlers")
        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(task, 5) == EXIT_OK
    finally:
        release.set()
    assert not _has_handler(signal.SIGTERM)


def _has_handler(sig: signal.Signals) -> bool:
    return signal.getsignal(sig) not in (signal.SIG_DFL, signal.SIG_IGN, None)
