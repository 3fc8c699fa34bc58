"""The receive loop: long poll, a small prefetch, pipelined jobs, drain.

At most one request is held beyond the one generating: while job N
generates on the GPU thread, the upload, publish and delete of N-1 and the
receive and download of N+1 run on the event loop, so the GPU never waits
for the network. Each job is a task of its own whose failures end in an
outcome; one bad request never stops the loop.

The worker stops when :meth:`Worker.request_drain` is called (signals, the
EC2 lifecycle watcher), on a fatal error, or, in burst mode, when the queue
is empty. Stopping cancels the long poll at once, releases prefetched
requests (visibility 0), and gives the running job ``DRAIN_TIMEOUT_S`` to
finish. At the end of that time, or on a second signal, its generation is
stopped at the next denoising step, its request released, and the worker
waits for the GPU thread to come back: a process that exits while torch
runs aborts. A GPU that does not come back within the stop grace is wedged:
the worker stops with status 1.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from consumer.aws.clients import AwsClients
from consumer.aws.publisher import Publisher
from consumer.aws.request_queue import ReceivedMessage, RequestQueue
from consumer.aws.storage import Storage
from consumer.aws.style_source import StyleShelf
from consumer.classify import classify, is_outage
from consumer.clock import Clock, SystemClock
from consumer.delivery.backoff import JitteredBackoff
from consumer.delivery.drain import cancel_and_release, gpu_came_back
from consumer.delivery.gpu_thread import GpuThread
from consumer.delivery.job import Job, JobEnvironment, input_preparer
from consumer.delivery.job_state import JobState
from consumer.delivery.options import Slots, WorkerOptions
from consumer.delivery.outage import Service, worker_outages
from consumer.delivery.runner import JobRunner
from consumer.delivery.signing_keys import load_until_read, signing_keys
from consumer.delivery.sources import PriorityShare, Source, receive_first, release_all
from consumer.delivery.worker_state import StatusBoard, WorkerState
from consumer.errors import Severity
from consumer.metrics import Metrics
from consumer.settings import Settings
from pipeline.api.interface import Generator

log = structlog.get_logger(__name__)

EXIT_OK, EXIT_FATAL = 0, 1


class Worker:
    """Consumes the request queue until drained, failed, or (burst) idle.

    Args:
        generator, styles: a loaded generator; the style catalog requests may name (or none).
        clients: open SQS, S3 and SNS clients.
        settings: the service settings (queue, topic, bucket, delivery).
        clock: time source; the system clock by default.
        options: loop behaviour (burst mode, poll wait, prefetch).
        metrics: where to count; a fresh registry by default.
        board: the status the sidecar reads; a fresh one by default.
        gpu: the thread the generator was loaded on; a new one by default.
    """

    def __init__(
        self,
        *,
        generator: Generator,
        clients: AwsClients,
        settings: Settings,
        clock: Clock | None = None,
        options: WorkerOptions | None = None,
        metrics: Metrics | None = None,
        board: StatusBoard | None = None,
        gpu: GpuThread | None = None,
        styles: StyleShelf | None = None,
    ) -> None:
        self.generator, self.styles = generator, styles
        self.settings = settings
        self.clock = clock or SystemClock()
        self.options = options or WorkerOptions()
        self.metrics = metrics or Metrics()
        self._own_gpu = gpu is None
        self.gpu = gpu or GpuThread()
        self.board = board or StatusBoard(self.clock, settings.worker_id)
        self.board.busy_probe = lambda: self.gpu.busy
        self.board.loaded(generator.model_name)
        self.queue = RequestQueue(clients.sqs, settings.sqs_queue_url, self.clock)
        self.priority_queue = (
            RequestQueue(clients.sqs, settings.sqs_priority_queue_url, self.clock)
            if settings.sqs_priority_queue_url
            else None
        )
        self.storage = Storage(clients.s3, settings.s3_bucket_name)
        self.publisher = Publisher(clients.sns, settings.sns_topic_arn)
        self.outages = worker_outages(clients, settings, self.clock, self.metrics)
        self.keys = signing_keys(settings, clients, self.clock, self.outages)
        self.preparer = input_preparer(settings, generator)
        self.board.paused_by = lambda: self.outages.out
        self.env: JobEnvironment | None = None
        self.exit_code = EXIT_OK
        self._slots = Slots(1 + self.options.prefetch)
        self._jobs: dict[str, tuple[Job, asyncio.Task[None]]] = {}
        self._share = PriorityShare(settings.priority_share)
        self._backoff = JitteredBackoff(
            self.options.loop_backoff_base_s, self.options.loop_backoff_max_s
        )
        self._stop, self._hurry = asyncio.Event(), asyncio.Event()
        self._job_ended, self._stopped = asyncio.Event(), asyncio.Event()
        self._receiver: asyncio.Task[None] | None = None
        self._heartbeats: list[asyncio.Task[None]] = []

    # The public surface.

    @property
    def state(self) -> WorkerState:
        """The worker's state, as the sidecar reports it."""
        return self.board.state

    @property
    def jobs(self) -> list[Job]:
        """The jobs in flight (received and not yet finished or released)."""
        return [job for job, _ in self._jobs.values()]

    def request_drain(self, reason: str, *, immediate: bool = False) -> None:
        """Stop taking work and wind down; safe to call more than once.

        The long poll is cancelled at once, prefetched requests are released,
        and the running job gets ``DRAIN_TIMEOUT_S`` to finish (none with
        `immediate`, as for a second signal). Call it from the event loop's
        thread (from another thread, through ``loop.call_soon_threadsafe``).
        """
        if immediate:
            self._hurry.set()
        if self._stop.is_set():
            return
        log.info("drain_requested", reason=reason)
        self.board.drain(reason)
        self._halt()

    async def wait_stopped(self) -> int:
        """Wait until :meth:`run` has finished winding down; its exit status."""
        await self._stopped.wait()
        return self.exit_code

    async def run(self) -> int:
        """Consume until stopped; 0 after a drain or an idle burst, 1 after a fatal error."""
        self._receiver = asyncio.create_task(self._receive_loop(), name="receive-loop")
        self._receiver.add_done_callback(self._task_ended)
        try:
            await self._stop.wait()
            await self._shutdown()
        except asyncio.CancelledError:
            self._cancel_tasks()  # the caller gave up on a clean drain
            raise
        finally:
            self.outages.close()
            self.preparer.close()
            self.board.loop_stopped()
            if self._own_gpu:
                self.gpu.close()
            self._stopped.set()
        log.info("worker_stopped", exit_code=self.exit_code, state=self.board.state.value)
        return self.exit_code

    # Stopping.

    def _halt(self) -> None:
        self._stop.set()
        if self._receiver is not None:
            self._receiver.cancel()  # also cancels a long poll in progress

    def _cancel_tasks(self) -> None:
        for task in (self._receiver, *self._heartbeats, *(t for _, t in self._jobs.values())):
            if task is not None:
                task.cancel()

    def _fatal(self, reason: str) -> None:
        if self.board.fatal_reason is None:
            log.critical("worker_fatal", reason=reason)
        self.board.fail(reason)
        self.exit_code = EXIT_FATAL
        self._halt()

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("task_failed", task=task.get_name(), exc_info=error)
            self._fatal(f"the {task.get_name()} task failed: {classify(error).message}")

    async def _shutdown(self) -> None:
        if self._receiver is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._receiver
        released = await self._release_prefetched()
        unfinished = await self._wait_for_running()
        for heartbeat in self._heartbeats:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        log.info("drain_finished", released_prefetched=released, released_running=unfinished)

    async def _release_prefetched(self) -> int:
        withdrawn = [(job, task) for job, task in self._jobs.values() if job.withdraw()]
        for job, _ in withdrawn:
            self._jobs.pop(job.message.receipt_handle, None)
        await cancel_and_release(withdrawn)
        return len(withdrawn)

    async def _wait_for_running(self) -> int:
        tasks = {task for _, task in self._jobs.values()}
        if not tasks:
            return 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.drain_timeout_s
        hurry = asyncio.create_task(self._hurry.wait())
        try:
            while tasks and not self._hurry.is_set() and (left := deadline - loop.time()) > 0:
                await asyncio.wait(tasks | {hurry}, timeout=left, return_when="FIRST_COMPLETED")
                tasks = {task for task in tasks if not task.done()}
        finally:
            hurry.cancel()
        if tasks:
            await self._release_running(tasks)
        return len(tasks)

    async def _release_running(self, tasks: set[asyncio.Task[None]]) -> None:
        late = [(job, task) for job, task in self._jobs.values() if task in tasks]
        log.warning("drain_timeout", jobs=len(late), drain_timeout_s=self.settings.drain_timeout_s)
        generating = [j.gpu_future for j, _ in late if j.gpu_future and not j.gpu_future.done()]
        for job, _ in late:
            job.stop.set()
        await cancel_and_release(late)
        grace = self.options.stop_grace()
        if not await gpu_came_back(generating, grace):
            self._fatal(f"the GPU did not come back within {grace:g} s of a stop: it is wedged")

    # Receiving.

    async def _receive_loop(self) -> None:
        sources = await self._setup()
        if sources is None:
            return
        for source in sources:
            task = asyncio.create_task(source.env.heartbeat.run(), name="heartbeat")
            task.add_done_callback(self._task_ended)
            self._heartbeats.append(task)
        self.board.loop_started()
        log.info(
            "worker_started",
            model=self.generator.model_name,
            visibility_timeout_s=sources[-1].env.heartbeat.visibility_s,
            max_attempts=sources[-1].env.max_attempts,
            priority_queue=len(sources) > 1,
            burst=self.options.burst,
        )
        while not self._stop.is_set():
            await self.outages.wait_clear()  # paused: no new request while a service is out
            free = await self._slots.wait_free()
            received = await self._poll(sources, free)
            if received is None:
                continue
            if not received and self.options.burst:
                if not self._jobs:
                    self.board.drain("burst: the queue is empty")
                    self._stop.set()
                    return
                self._job_ended.clear()
                await self._job_ended.wait()
            if self.outages.out:  # a long poll open as the outage began: give back
                await release_all(received, self.outages.out)
                continue
            for source, message in received:
                self._start(source, message)

    async def _setup(self) -> list[Source] | None:
        """The sources to receive from, the priority queue first."""
        if (problem := await load_until_read(self.keys, self.outages)) is not None:
            self._fatal(problem)
            return None
        queues = [q for q in (self.priority_queue, self.queue) if q is not None]
        sources = []
        for queue in queues:
            env = await self._describe(queue)
            if env is None:
                return None
            env.heartbeat.on_outage = lambda error: self.outages.mark(Service.SQS, error)
            sources.append(Source(queue, env, JobRunner(env, self.outages, self.keys)))
        self.env = sources[-1].env
        return sources

    async def _describe(self, queue: RequestQueue) -> JobEnvironment | None:
        while True:
            try:
                info = await queue.describe()
            except Exception as error:
                if not await self._trouble("GetQueueAttributes", error):
                    return None
                continue
            return JobEnvironment.build(
                settings=self.settings,
                info=info,
                generator=self.generator,
                gpu=self.gpu,
                queue=queue,
                storage=self.storage,
                publisher=self.publisher,
                metrics=self.metrics,
                clock=self.clock,
                stop_grace_s=self.options.stop_grace(),
                preparer=self.preparer,
                styles=self.styles,
            )

    async def _poll(
        self, sources: list[Source], free: int
    ) -> list[tuple[Source, ReceivedMessage]] | None:
        try:
            received = await receive_first(sources, free, self.options, self._share)
        except Exception as error:
            await self._trouble("ReceiveMessage", error)
            return None
        if self.board.trouble is not None:
            log.info("aws_recovered")
        self._backoff.reset()
        self.board.polled()
        self.metrics.last_poll.set(self.clock.now().timestamp())
        return received

    async def _trouble(self, call: str, error: Exception) -> bool:
        """Back off after a failed loop call (an SQS outage: paused until it ends);
        ``False`` when the error is fatal (the worker is stopping: give up)."""
        if is_outage(error):
            await self.outages.wait_out(Service.SQS, error)
            return True
        verdict = classify(error)
        if verdict.severity is Severity.FATAL:
            self._fatal(verdict.message)
            return False
        delay = self._backoff.next_delay()
        self.board.troubled(f"{call}: {verdict.message}")
        self.metrics.loop_errors.inc()
        log.warning(
            "aws_call_failed",
            call=call,
            error=verdict.message,
            retry_in_s=round(delay, 2),
            failures=self._backoff.failures,
            exc_info=None if verdict.expected else error,
        )
        await self.clock.sleep(delay)
        return True

    # Jobs.

    def _start(self, source: Source, message: ReceivedMessage) -> None:
        heartbeat = source.env.heartbeat
        job = Job(message, self.clock, heartbeat, release_slot=self._slots.take())
        heartbeat.track(message)
        name = f"job-{message.message_id}"
        task = asyncio.create_task(self._run_job(source.runner, job), name=name)
        self._jobs[message.receipt_handle] = (job, task)
        self._count_in_flight()

    async def _run_job(self, runner: JobRunner, job: Job) -> None:
        try:
            outcome = await runner.run(job)
        finally:
            job.abandon()  # a cancelled job ends here, giving its slot back
            self._jobs.pop(job.message.receipt_handle, None)
            self._count_in_flight()
            self._job_ended.set()
        # A fatal failure stops the worker, also when its request ended as a
        # failure of its own (crashed_worker at the last death allowed).
        if outcome is JobState.FATAL or job.fatal_reason is not None:
            self._fatal(job.fatal_reason or "the generator failed")

    def _count_in_flight(self) -> None:
        self.board.jobs_in_flight = len(self._jobs)
        self.metrics.in_flight.set(len(self._jobs))
