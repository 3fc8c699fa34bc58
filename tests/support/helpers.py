"""Shared pieces of the consumer tests: requests, settings, waiting, a worker.

What a test does to its AWS resources (send, upload, count) is on
:class:`~tests.support.aws.Stack`.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar, overload

from PIL import Image

from consumer.aws.clients import AwsClients, open_clients
from consumer.aws.style_source import StyleShelf
from consumer.cli.local_aws import REGION
from consumer.delivery.options import WorkerOptions
from consumer.delivery.worker import Worker
from consumer.settings import Settings
from pipeline.api.interface import Generator
from tests.support.recording import SIZE

if TYPE_CHECKING:
    # Only a type here: tests.support.aws imports this module for `png`.
    from tests.support.aws import Stack

T = TypeVar("T")
FAST = WorkerOptions(poll_wait_s=1, loop_backoff_base_s=0.05, loop_backoff_max_s=0.2)


def png(
    width: int = 32, height: int = 32, color: str | tuple[int, int, int] = (200, 120, 80)
) -> bytes:
    """A small PNG picture of one colour (a name or an RGB triple)."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def memory(job_id: str, user_id: str = "user1", **fields: Any) -> dict[str, Any]:
    """A small, valid memory request."""
    return {
        "job_id": job_id,
        "kind": "memory",
        "user_id": user_id,
        "prompt": "a walk",
        "num_inference_steps": 1,
        "width": SIZE,
        "height": SIZE,
        "seed": 7,
        **fields,
    }


def subject(job_id: str, user_id: str = "user1", **fields: Any) -> dict[str, Any]:
    """A small, valid subject request."""
    return {
        "job_id": job_id,
        "kind": "subject",
        "user_id": user_id,
        "num_inference_steps": 1,
        "width": SIZE,
        "height": SIZE,
        **fields,
    }


def settings(**overrides: Any) -> Settings:
    """The settings of the stack in the environment, quick to retry, sidecar off-port."""
    values: dict[str, Any] = {
        "health_host": "127.0.0.1",
        "health_port": 0,
        "retry_backoff_base_s": 0,
        "worker_id": "test-worker",
    }
    values.update(overrides)
    return Settings(**values)


@overload
async def eventually(
    check: Callable[[], Awaitable[T]], *, within: float = ..., what: str = ...
) -> T: ...
@overload
async def eventually(check: Callable[[], T], *, within: float = ..., what: str = ...) -> T: ...
async def eventually(
    check: Callable[[], Any], *, within: float = 20.0, what: str = "a condition"
) -> Any:
    """Poll `check` until it returns something true; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)


class Observer:
    """Collects the completion events (and their attributes) of a stack."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.events: list[dict[str, Any]] = []
        self.attributes: list[dict[str, str]] = []

    def _drain(self) -> None:
        sqs = self.stack.client("sqs")
        while True:
            response = sqs.receive_message(
                QueueUrl=self.stack.observer_url,
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
            )
            messages = response.get("Messages", [])
            if not messages:
                return
            for message in messages:
                self.events.append(json.loads(message["Body"]))
                self.attributes.append(
                    {
                        k: v.get("StringValue", "")
                        for k, v in message.get("MessageAttributes", {}).items()
                    }
                )
                sqs.delete_message(
                    QueueUrl=self.stack.observer_url, ReceiptHandle=message["ReceiptHandle"]
                )

    async def wait(self, count: int = 1, within: float = 15.0) -> list[dict[str, Any]]:
        """Wait until at least `count` events arrived; all of them so far."""

        async def enough() -> bool:
            await asyncio.to_thread(self._drain)
            return len(self.events) >= count

        await eventually(enough, within=within, what=f"{count} event(s)")
        return self.events

    async def settle(self, seconds: float = 0.5) -> list[dict[str, Any]]:
        """Every event that arrives within `seconds` more (to prove none is extra)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await asyncio.to_thread(self._drain)
            await asyncio.sleep(0.05)
        return self.events


def submit(stack: Stack, *job_ids: str) -> Observer:
    """user1's input picture in place and a memory request for each of
    `job_ids` on the queue; an observer of their events."""
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    for job_id in job_ids:
        stack.send(memory(job_id))
    return observer


class Running:
    """A worker running as a task; see :func:`running`."""

    def __init__(self, worker: Worker, task: asyncio.Task[int]) -> None:
        self.worker = worker
        self.task = task

    async def stop(self, *, immediate: bool = True) -> int:
        """Drain the worker and return its exit status."""
        self.worker.request_drain("test", immediate=immediate)
        return await asyncio.wait_for(self.task, 30)


@asynccontextmanager
async def running(
    generator: Generator,
    config: Settings | None = None,
    options: WorkerOptions = FAST,
    clients: AwsClients | None = None,
    styles: StyleShelf | None = None,
) -> AsyncIterator[Running]:
    """A worker on the stack in the environment, drained at the end."""
    async with open_clients(REGION) as opened:
        worker = Worker(
            generator=generator,
            clients=clients or opened,
            settings=config or settings(),
            options=options,
            styles=styles,
        )
        handle = Running(worker, asyncio.create_task(worker.run()))
        try:
            yield handle
        finally:
            if not handle.task.done():
                await handle.stop()
