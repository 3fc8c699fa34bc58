"""`illustrator run` as a coroutine: sidecar, model, clients, worker, signals.

The order matters to operations: the sidecar answers first (``starting``),
so an orchestrator sees the process alive while the model loads; then every
queue, the topic and the bucket are asked once (a configuration that cannot
work exits 2 before any model is loaded); then the generator is built and
loaded on the GPU thread; then the worker runs until drained. Companions
(such as the EC2 lifecycle watcher) run beside the worker and get a moment
after it stops to finish their own business.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TypeVar

import structlog
from aioboto3 import Session

from consumer.aws.clients import make_session, open_clients
from consumer.aws.style_source import StyleShelf
from consumer.classify import classify
from consumer.clock import Clock, SystemClock
from consumer.delivery.gpu_thread import GpuThread
from consumer.delivery.options import WorkerOptions
from consumer.delivery.worker import EXIT_FATAL, EXIT_OK, Worker
from consumer.delivery.worker_state import StatusBoard
from consumer.errors import ConfigError
from consumer.metrics import Metrics
from consumer.service.lifecycle import Companion
from consumer.service.preflight import StartupTimeout, check_resources
from consumer.service.sidecar import Sidecar
from consumer.settings import Settings
from pipeline.api.interface import Generator

log = structlog.get_logger(__name__)

T = TypeVar("T")

GeneratorLoader = Callable[[Settings, GpuThread], Awaitable[Generator]]
"""Builds and loads the generator; blocking work goes to the given GPU thread."""

# How long companions may go on after the worker stopped.
COMPANION_GRACE_S = 30.0


class _Signals:
    """SIGTERM and SIGINT: first a drain, then (a second one) an immediate stop."""

    def __init__(self) -> None:
        self.worker: Worker | None = None
        self.early = asyncio.Event()
        self.count = 0

    def __call__(self, name: str) -> None:
        self.count += 1
        if self.worker is not None:
            self.worker.request_drain(name, immediate=self.count > 1)
        else:
            log.info("stop_before_start", signal=name)
            self.early.set()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self, sig.name)
        try:
            yield
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)


@contextlib.contextmanager
def _reload_on_hangup(styles: StyleShelf | None) -> Iterator[None]:
    """SIGHUP re-reads the style catalog (swapped in only if all of it is valid)."""
    if styles is None:
        yield
        return
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[bool]] = set()

    def hangup() -> None:
        log.info("styles_reload_requested", signal="SIGHUP")
        task = loop.create_task(styles.reload(), name="styles-reload")
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, hangup)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        for task in reloads:
            task.cancel()


async def _until(awaitable: Awaitable[T], stop: asyncio.Event) -> T | None:
    work = asyncio.ensure_future(awaitable)
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if work.done():
        return work.result()
    work.cancel()
    return None


async def _check(
    settings: Settings, session: Session, board: StatusBoard, stop: asyncio.Event, clock: Clock
) -> bool:
    """The start-up checks (:mod:`consumer.service.preflight`); ``False`` when
    stopped by a signal or when a service stayed out past the deadline.
    Bad configuration raises :class:`ConfigError` (exit status 2)."""
    try:
        # One attempt per call: the checks back off themselves, and an
        # outage shows as paused at once instead of after the client's retries.
        async with open_clients(settings.aws_region, max_attempts=1, session=session) as clients:
            await _until(check_resources(settings, clients, clock, board), stop)
    except StartupTimeout as error:
        board.fail(error.message)
        log.critical("startup_timeout", error=error.message)
        return False
    return not stop.is_set()


async def _load(
    settings: Settings,
    loader: GeneratorLoader,
    gpu: GpuThread,
    board: StatusBoard,
    metrics: Metrics,
    stop: asyncio.Event,
    clock: Clock,
) -> Generator | None:
    started = clock.monotonic()
    try:
        generator = await _until(loader(settings, gpu), stop)
    except ConfigError:
        # Found while loading (an s3:// source once fetched): still bad
        # configuration, one line and exit status 2, not a broken worker.
        raise
    except Exception as error:
        verdict = classify(error)
        board.fail(f"the model could not be loaded: {verdict.message}")
        log.critical("model_load_failed", error=verdict.message, exc_info=error)
        return None
    if generator is not None:
        seconds = clock.monotonic() - started
        metrics.model_load_seconds.set(seconds)
        board.loaded(generator.model_name)
        log.info("model_loaded", model=generator.model_name, seconds=round(seconds, 2))
    return generator


async def _accompany(worker: Worker, companions: Sequence[Companion]) -> int:
    tasks = [asyncio.create_task(companion(worker)) for companion in companions]
    code = await worker.run()
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=COMPANION_GRACE_S)
        for task in pending:
            task.cancel()
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("companion_failed", exc_info=task.exception())
    return code


async def serve(
    settings: Settings,
    loader: GeneratorLoader,
    *,
    options: WorkerOptions | None = None,
    companions: Sequence[Companion] = (),
    clock: Clock | None = None,
    handle_signals: bool = True,
    styles: StyleShelf | None = None,
) -> int:
    """Run the whole consumer; return the process exit status.

    0 after a drain (signal, companion) or an idle burst; 1 when the model
    cannot be loaded or the worker hits a fatal error. `styles` is the style
    catalog the requests may name (the loader reads it at start); with
    `handle_signals`, SIGHUP reads it again.
    """
    clock = clock or SystemClock()
    metrics = Metrics()
    board = StatusBoard(clock, settings.worker_id)
    sidecar = Sidecar(board, metrics, settings.health_host, settings.health_port)
    await sidecar.start()
    log.info("sidecar_listening", url=sidecar.url)
    signals = _Signals()
    gpu = GpuThread()
    if styles is not None:
        styles.metrics = metrics
    try:
        with (
            signals.installed() if handle_signals else contextlib.nullcontext(),
            _reload_on_hangup(styles if handle_signals else None),
        ):
            session = make_session(settings.aws_region)
            if not await _check(settings, session, board, signals.early, clock):
                return EXIT_OK if signals.early.is_set() else EXIT_FATAL
            secrets = bool(settings.auth_enabled and settings.auth_token_secret_id)
            async with open_clients(
                settings.aws_region, secrets=secrets, session=session
            ) as clients:
                generator = await _load(settings, loader, gpu, board, metrics, signals.early, clock)
                if generator is None:
                    return EXIT_OK if signals.early.is_set() else EXIT_FATAL
                worker = Worker(
                    generator=generator,
                    clients=clients,
                    settings=settings,
                    clock=clock,
                    options=options,
                    metrics=metrics,
                    board=board,
                    gpu=gpu,
                    styles=styles,
                )
                signals.worker = worker
                return await _accompany(worker, companions)
    finally:
        gpu.close()
        await sidecar.stop()
