"""A worker behind the fault proxy, for the fault-injection tests.

The worker is the production :class:`~consumer.worker.Worker` with
production-configured aioboto3 clients, except that they reach moto through
a :class:`~tests.chaos.proxy.FaultProxy` served on the test's own event loop.
Its health sidecar is served on the same loop, on a free loopback port.
Synchronous boto3 calls of the test itself go straight to moto, in a thread,
so they never wait on the loop the proxy and the worker share.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aioboto3
import aiohttp
from aiobotocore.config import AioConfig

from consumer.aws.clients import AwsClients, client_config
from consumer.clock import Clock
from consumer.delivery.options import WorkerOptions
from consumer.delivery.worker import Worker
from consumer.service.sidecar import Sidecar
from consumer.settings import Settings
from tests.chaos.proxy import FaultProxy, Rule
from tests.support.aws import REGION, Stack
from tests.support.helpers import Observer, png
from tests.support.recording import Recording

# Quick loop backoff and a short long poll: the tests wait on outcomes, not on timers.
# Attempts botocore makes per call in the rig (see :func:`rig`): a rule with
# ``times=CALL_ATTEMPTS`` makes one call of the worker fail for good.
CALL_ATTEMPTS = 2
OPTIONS = WorkerOptions(poll_wait_s=1, loop_backoff_base_s=0.05, loop_backoff_max_s=0.5)


@dataclass
class Rig:
    """A running worker behind a fault proxy, and what the test sees of it."""

    stack: Stack
    proxy: FaultProxy
    worker: Worker
    generator: Recording
    task: asyncio.Task[int]
    sidecar_url: str = ""
    observer: Observer = field(init=False)

    def __post_init__(self) -> None:
        self.observer = Observer(self.stack)

    @property
    def events(self) -> list[dict[str, Any]]:
        """The completion events seen so far (by :meth:`wait_events`, :meth:`settle`)."""
        return self.observer.events

    async def send(self, body: dict[str, Any] | str) -> str:
        """Put a request on the queue (straight to moto); its message id."""
        text = body if isinstance(body, str) else json.dumps(body)
        sqs = self.stack.client("sqs")
        response = await asyncio.to_thread(
            sqs.send_message, QueueUrl=self.stack.queue_url, MessageBody=text
        )
        return str(response["MessageId"])

    async def probe(self, path: str) -> tuple[int, dict[str, Any]]:
        """The sidecar's answer to ``GET path`` (``/readyz``, ``/livez``), over HTTP."""
        timeout = aiohttp.ClientTimeout(total=5)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(self.sidecar_url + path) as response,
        ):
            return response.status, await response.json()

    async def put_input(self, key: str = "avatars/user1.png") -> None:
        s3 = self.stack.client("s3")
        await asyncio.to_thread(s3.put_object, Bucket=self.stack.bucket, Key=key, Body=png())

    async def wait_events(self, count: int, within: float = 30.0) -> list[dict[str, Any]]:
        """Wait until at least `count` completion events arrived; all so far."""
        return await self.observer.wait(count, within)

    async def settle(self, seconds: float = 1.0) -> list[dict[str, Any]]:
        """Every event arriving within `seconds` more, to show none is extra."""
        return await self.observer.settle(seconds)

    async def objects(self) -> list[str]:
        s3 = self.stack.client("s3")
        response = await asyncio.to_thread(
            s3.list_objects_v2, Bucket=self.stack.bucket, Prefix="generated/"
        )
        return [item["Key"] for item in response.get("Contents", [])]

    async def dead_letters(self) -> list[dict[str, Any]]:
        sqs = self.stack.client("sqs")
        response = await asyncio.to_thread(
            sqs.receive_message,
            QueueUrl=self.stack.dlq_url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            VisibilityTimeout=60,
        )
        return list(response.get("Messages", []))

    async def queue_counts(self) -> tuple[int, int]:
        """(visible, in flight) requests."""
        sqs = self.stack.client("sqs")
        attributes = (
            await asyncio.to_thread(
                sqs.get_queue_attributes,
                QueueUrl=self.stack.queue_url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )
        )["Attributes"]
        return (
            int(attributes["ApproximateNumberOfMessages"]),
            int(attributes["ApproximateNumberOfMessagesNotVisible"]),
        )

    def retries(self) -> float:
        """Jobs the worker has sent back to the queue after a transient failure."""
        return sum(
            sample.value
            for metric in self.worker.metrics.registry.collect()
            if metric.name == "illustrator_retries"
            for sample in metric.samples
            if sample.name == "illustrator_retries_total"
        )

    async def stop(self, within: float = 30.0) -> int:
        """Drain the worker; its exit status."""
        self.worker.request_drain("test", immediate=True)
        return await asyncio.wait_for(self.task, within)


def rig_settings(**overrides: Any) -> Settings:
    """The settings of the stack in the environment, retrying at once.

    Requests are hidden for 2 s at a time, so one whose worker lost track of
    it comes back within the test's patience.
    """
    values: dict[str, Any] = {
        "visibility_timeout_s": 2,
        "health_host": "127.0.0.1",
        "health_port": 0,
        "retry_backoff_base_s": 0,
        "retry_backoff_max_s": 0,
        "worker_id": "reliability",
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def rig(
    stack: Stack,
    moto_endpoint: str,
    *,
    settings: Settings | None = None,
    clock: Clock | None = None,
    read_timeout: float | None = None,
    attempts: int | None = CALL_ATTEMPTS,
    options: WorkerOptions = OPTIONS,
    record: bool = False,
    rules: Sequence[Rule] = (),
) -> AsyncIterator[Rig]:
    """A worker on `stack` behind a fresh fault proxy; drained on exit.

    The clients are configured as in production (consumer/aws.py) except:
    `attempts` caps botocore's attempts per call (``None``: production's 6,
    whose backoff makes a call that fails for good take about 15 s), and
    `read_timeout` shortens the 30 s read timeout so a hang costs seconds.
    `rules` are in force from the worker's first call.
    """
    proxy = FaultProxy(moto_endpoint, rules, seed=7, record=record)
    url = await proxy.start()
    config = client_config()
    if attempts is not None:
        config = config.merge(
            AioConfig(retries={"mode": "adaptive", "total_max_attempts": attempts})
        )
    if read_timeout is not None:
        config = config.merge(AioConfig(read_timeout=read_timeout, connect_timeout=read_timeout))
    session = aioboto3.Session(region_name=REGION)
    gate = threading.Event()
    gate.set()  # open until a test holds the GPU
    generator = Recording(gate=gate)
    async with AsyncExitStack() as stack_of_clients:
        clients = AwsClients(
            sqs=await stack_of_clients.enter_async_context(
                session.client("sqs", endpoint_url=url, config=config)
            ),
            s3=await stack_of_clients.enter_async_context(
                session.client("s3", endpoint_url=url, config=config)
            ),
            sns=await stack_of_clients.enter_async_context(
                session.client("sns", endpoint_url=url, config=config)
            ),
        )
        worker = Worker(
            generator=generator,
            clients=clients,
            settings=settings or rig_settings(),
            clock=clock,
            options=options,
        )
        sidecar = Sidecar(worker.board, worker.metrics, "127.0.0.1", 0)
        await sidecar.start()
        task = asyncio.create_task(worker.run())
        running = Rig(stack, proxy, worker, generator, task, sidecar.url)
        try:
            yield running
        finally:
            generator.gate.set()
            proxy.clear()
            if not task.done():
                await running.stop()
            await sidecar.stop()
            await proxy.stop()
