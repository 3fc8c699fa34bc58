"""Shared pieces of the consumer tests: generators, requests, waiting, a worker."""

from __future__ import annotations

import asyncio
import inspect
import io
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar, overload

from PIL import Image

from consumer.aws.clients import AwsClients, open_clients
from consumer.contract.signing import sign
from consumer.delivery.options import WorkerOptions
from consumer.delivery.worker import Worker
from consumer.settings import Settings
from pipeline.api.interface import Generator
from tests.support.aws import REGION, Stack
from tests.support.recording import SIZE

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


def send(
    stack: Stack,
    body: dict[str, Any] | str,
    *,
    attributes: dict[str, str] | None = None,
    token: str | None = None,
) -> str:
    """Send a request (a dict is sent as JSON); `token` signs it. Returns the message id."""
    text = body if isinstance(body, str) else json.dumps(body)
    attrs = {k: {"DataType": "String", "StringValue": v} for k, v in (attributes or {}).items()}
    if token is not None:
        attrs["signature"] = {"DataType": "String", "StringValue": sign(text.encode(), token)}
    response = stack.client("sqs").send_message(
        QueueUrl=stack.queue_url, MessageBody=text, MessageAttributes=attrs
    )
    return str(response["MessageId"])


def put_input(stack: Stack, key: str, data: bytes | None = None) -> None:
    """Upload an input picture."""
    stack.client("s3").put_object(Bucket=stack.bucket, Key=key, Body=data or png())


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


def queue_counts(stack: Stack, url: str | None = None) -> tuple[int, int]:
    """(visible, in flight) messages of the request queue (or `url`)."""
    attributes = stack.client("sqs").get_queue_attributes(
        QueueUrl=url or stack.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


def receive_all(stack: Stack, url: str, wait_s: int = 0) -> list[dict[str, Any]]:
    """Receive (and hide) every visible message of `url`, with their attributes."""
    response = stack.client("sqs").receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=wait_s,
        MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["All"],
    )
    return list(response.get("Messages", []))


def outputs(stack: Stack, prefix: str = "generated/") -> list[str]:
    """The keys of generated objects."""
    response = stack.client("s3").list_objects_v2(Bucket=stack.bucket, Prefix=prefix)
    return [item["Key"] for item in response.get("Contents", [])]


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
) -> AsyncIterator[Running]:
    """A worker on the stack in the environment, drained at the end."""
    async with open_clients(REGION) as opened:
        worker = Worker(
            generator=generator,
            clients=clients or opened,
            settings=config or settings(),
            options=options,
        )
        handle = Running(worker, asyncio.create_task(worker.run()))
        try:
            yield handle
        finally:
            if not handle.task.done():
                await handle.stop()
