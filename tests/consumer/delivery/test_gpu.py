"""The GPU thread: serial, context-carrying, withdrawable, never blocking the loop."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from types import SimpleNamespace
from typing import Any, cast

import pytest
import structlog

from consumer.delivery.generation import generate_on_gpu
from consumer.delivery.gpu_thread import GpuThread
from consumer.delivery.heartbeat import Heartbeat
from consumer.delivery.job import Job, JobEnvironment, Prepared
from pipeline.api.errors import GenerationOOMError
from pipeline.api.spec import GenerationSpec, JobKind
from tests.support.fakes import FakeClock, message
from tests.support.helpers import eventually


async def test_calls_run_one_at_a_time_in_order_on_one_thread() -> None:
    gpu = GpuThread()
    seen: list[tuple[int, str]] = []
    active = 0
    peak = 0
    lock = threading.Lock()

    def work(n: int) -> int:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        seen.append((n, threading.current_thread().name))
        with lock:
            active -= 1
        return n * 2

    results = await asyncio.gather(*(gpu.run(work, n) for n in range(5)))
    gpu.close()
    assert results == [0, 2, 4, 6, 8]
    assert [n for n, _ in seen] == [0, 1, 2, 3, 4]
    assert {name for _, name in seen} == {"gpu"}
    assert peak == 1


async def test_the_loop_keeps_running_while_the_gpu_works() -> None:
    gpu = GpuThread()
    release = threading.Event()
    job = asyncio.ensure_future(gpu.run(release.wait, 10))
    await eventually(lambda: gpu.busy, what="the call to start")
    for _ in range(20):  # the loop turns while the thread is blocked
        await asyncio.sleep(0)
    assert gpu.busy
    assert not job.done()
    release.set()
    assert await job is True
    gpu.close()


async def test_context_variables_reach_the_thread() -> None:
    gpu = GpuThread()
    structlog.contextvars.bind_contextvars(job_id="j-1")
    try:
        seen = await gpu.run(lambda: structlog.contextvars.get_contextvars().get("job_id"))
    finally:
        structlog.contextvars.clear_contextvars()
    gpu.close()
    assert seen == "j-1"


async def test_queued_work_can_be_withdrawn_but_running_work_cannot() -> None:
    gpu = GpuThread()
    release = threading.Event()
    running = gpu.submit(release.wait, 10)
    queued = gpu.submit(lambda: "never")
    await eventually(running.running, what="the call to start")
    assert running.cancel() is False
    assert queued.cancel() is True
    release.set()
    assert (await asyncio.wrap_future(running)).value is True
    gpu.close()


async def test_errors_reach_the_awaiting_coroutine_with_timings() -> None:
    gpu = GpuThread()

    def broken() -> None:
        raise RuntimeError("CUDA error")

    with pytest.raises(RuntimeError, match="CUDA"):
        await gpu.run(broken)
    timed = await asyncio.wrap_future(gpu.submit(lambda: 1))
    assert timed.value == 1
    assert timed.seconds >= 0
    gpu.close()


class _Ballast:
    """Stands in for what a failed generation's frames hold (activations)."""


class _FailingGenerator:
    """Fails every call with an error raised from a frame that holds a `_Ballast`."""

    model_name = "failing"
    native_size = (64, 64)

    def __init__(self) -> None:
        self.held: list[weakref.ref[_Ballast]] = []

    def load(self) -> None:
        pass

    def generate(self, spec: GenerationSpec, image: Any, stop: Any = None) -> list[Any]:
        ballast = _Ballast()
        self.held.append(weakref.ref(ballast))
        raise GenerationOOMError("out of GPU memory at 64x64; cache freed, try again later")


async def test_a_failed_generation_is_kept_neither_by_its_job_nor_by_the_thread() -> None:
    gpu = GpuThread()
    generator = _FailingGenerator()
    env = cast(
        JobEnvironment,
        SimpleNamespace(
            gpu=gpu,
            generator=generator,
            settings=SimpleNamespace(generation_timeout_s=60.0),
            stop_grace_s=5.0,
        ),
    )
    job = Job(message(), FakeClock(), cast(Heartbeat, None))
    job_spec = GenerationSpec(JobKind.MEMORY, "", "", "", 2, 0.5, 5.0, 0, 64, 64)
    prepared = cast(Prepared, SimpleNamespace(spec=job_spec, image=None))
    failed = False
    try:
        await generate_on_gpu(env, job, prepared, None)
    except GenerationOOMError:
        failed = True  # the error is dropped at the end of this block
    assert failed

    def let_go() -> bool:
        gc.collect()
        return generator.held[0]() is None

    # Classified and passed on: nothing keeps the error or the frames it holds,
    # once the thread waits for its next call (it may still be returning from
    # the failed one when the coroutine wakes), and the job goes on.
    await eventually(let_go, within=5.0, what="the failed generation's frames to be freed")
    assert job.gpu_future is not None
    assert job.gpu_future.done()
    assert job.withdraw() is False
    gpu.close()
