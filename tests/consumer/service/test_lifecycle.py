"""The EC2 lifecycle watch against a stand-in for the metadata service on loopback.

The stand-in also answers the Auto Scaling query API, so CompleteLifecycleAction
(which moto does not implement) goes through the real botocore client, pointed
at it with ``AWS_ENDPOINT_URL_AUTO_SCALING``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web

from consumer.service.lifecycle import LifecycleWatcher, drain_on_notice, spot_reason
from tests.support.aws import Stack
from tests.support.helpers import eventually, png

ROOT = Path(__file__).resolve().parents[3]
INSTANCE_ID = "i-0123456789abcdef0"
GROUP = "illustrator-workers"
SPOT_NOTICE = '{"action": "terminate", "time": "2026-11-24T10:02:00Z"}'
AUTOSCALING_NS = "http://autoscaling.amazonaws.com/doc/2011-01-01/"


class StandIn:
    """IMDSv2 (token, then reads with it) and CompleteLifecycleAction."""

    def __init__(self) -> None:
        self.lifecycle_state: str | None = "InService"
        self.spot_action: str | None = None
        self.tags: dict[str, str] = {"aws:autoscaling:groupName": GROUP}
        self.tokens_issued = 0
        self.valid_tokens: set[str] = set()
        self.reads: list[str] = []
        self.failures_left = 0
        self.completions: list[dict[str, str]] = []
        self.completion_error: str | None = None
        # Set: only this hook holds the instance; completing another fails.
        self.active_hook: str | None = None
        self.attempts: list[str] = []
        self.url = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_put("/latest/api/token", self._token)
        app.router.add_get("/latest/meta-data/{path:.*}", self._read)
        app.router.add_post("/", self._autoscaling)
        return app

    async def _token(self, request: web.Request) -> web.Response:
        if "X-aws-ec2-metadata-token-ttl-seconds" not in request.headers:
            return web.Response(status=400)
        self.tokens_issued += 1
        token = f"token-{self.tokens_issued}"
        self.valid_tokens.add(token)
        return web.Response(text=token)

    def _value(self, path: str) -> str | None:
        if path == "instance-id":
            return INSTANCE_ID
        if path == "autoscaling/target-lifecycle-state":
            return self.lifecycle_state
        if path == "spot/instance-action":
            return self.spot_action
        if path.startswith("tags/instance/"):
            return self.tags.get(path.removeprefix("tags/instance/"))
        return None

    async def _read(self, request: web.Request) -> web.Response:
        if self.failures_left > 0:
            self.failures_left -= 1
            return web.Response(status=500)
        if request.headers.get("X-aws-ec2-metadata-token") not in self.valid_tokens:
            return web.Response(status=401)
        path = request.match_info["path"]
        self.reads.append(path)
        value = self._value(path)
        return web.Response(status=404) if value is None else web.Response(text=value)

    async def _autoscaling(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        hook = str(form.get("LifecycleHookName"))
        self.attempts.append(hook)
        error = self.completion_error
        if self.active_hook is not None and hook != self.active_hook:
            error = f"No active Lifecycle Action found with instance ID {INSTANCE_ID}"
        if error is not None:
            body = (
                f'<ErrorResponse xmlns="{AUTOSCALING_NS}"><Error><Type>Sender</Type>'
                f"<Code>ValidationError</Code><Message>{error}</Message>"
                "</Error><RequestId>r-1</RequestId></ErrorResponse>"
            )
            return web.Response(status=400, text=body, content_type="text/xml")
        self.completions.append({k: str(v) for k, v in form.items()})
        body = (
            f'<CompleteLifecycleActionResponse xmlns="{AUTOSCALING_NS}">'
            "<CompleteLifecycleActionResult/><ResponseMetadata><RequestId>r-1</RequestId>"
            "</ResponseMetadata></CompleteLifecycleActionResponse>"
        )
        return web.Response(text=body, content_type="text/xml")


@pytest.fixture
async def imds(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StandIn]:
    """The stand-in, served on a free loopback port, with the endpoints pointing at it."""
    stand_in = StandIn()
    runner = web.AppRunner(stand_in.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    stand_in.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", stand_in.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_AUTO_SCALING", stand_in.url)
    yield stand_in
    await runner.cleanup()


def _watcher(stand_in: StandIn, **options: Any) -> LifecycleWatcher:
    return LifecycleWatcher(
        region="us-east-1", endpoint=stand_in.url, poll_interval_s=0.01, **options
    )


async def test_no_notice_while_in_service_and_one_token_is_reused(imds: StandIn) -> None:
    async with _watcher(imds) as watcher:
        assert await watcher.check() is None
        assert await watcher.check() is None

    assert imds.tokens_issued == 1
    assert imds.reads.count("autoscaling/target-lifecycle-state") == 2
    assert imds.reads.count("spot/instance-action") == 2


async def test_outside_an_auto_scaling_group_there_is_no_notice(imds: StandIn) -> None:
    imds.lifecycle_state = None

    async with _watcher(imds) as watcher:
        assert await watcher.check() is None


async def test_scale_in_is_a_notice(imds: StandIn) -> None:
    imds.lifecycle_state = "Terminated"

    async with _watcher(imds) as watcher:
        assert await watcher.check() == "auto scaling: instance is being terminated"


@pytest.mark.parametrize("state", ["Warmed:Stopped", "Warmed:Hibernated", "Warmed:Running"])
async def test_a_return_to_the_warm_pool_is_a_notice(imds: StandIn, state: str) -> None:
    # Scale-in with ReuseOnScaleIn: the group stops the instance rather than
    # terminating it, and a worker still taking jobs would lose them.
    imds.lifecycle_state = state

    async with _watcher(imds) as watcher:
        assert await watcher.check() == "auto scaling: instance returns to the warm pool"


@pytest.mark.parametrize("state", ["InService", "Standby", "Detached"])
async def test_other_target_states_are_no_notice(imds: StandIn, state: str) -> None:
    imds.lifecycle_state = state

    async with _watcher(imds) as watcher:
        assert await watcher.check() is None


async def test_on_the_way_to_the_warm_pool_the_launch_hook_is_completed(imds: StandIn) -> None:
    imds.lifecycle_state = "Warmed:Stopped"
    imds.active_hook = "illustrator-ready"  # Warmed:Pending:Wait is the launch hook's

    async with _watcher(imds) as watcher:
        await watcher.check()
        await watcher.complete()

    [call] = imds.completions
    assert (call["LifecycleHookName"], call["LifecycleActionResult"]) == (
        "illustrator-ready",
        "CONTINUE",
    )
    assert imds.attempts == ["illustrator-ready"]


async def test_on_the_way_to_the_warm_pool_a_held_termination_hook_is_completed_too(
    imds: StandIn,
) -> None:
    imds.lifecycle_state = "Warmed:Stopped"
    imds.active_hook = "illustrator-drain"

    with structlog.testing.capture_logs() as logs:
        async with _watcher(imds) as watcher:
            await watcher.check()
            await watcher.complete()

    assert imds.attempts == ["illustrator-ready", "illustrator-drain"]
    [call] = imds.completions
    assert call["LifecycleHookName"] == "illustrator-drain"
    assert not [e for e in logs if e["event"] == "lifecycle_action_not_completed"]


async def test_a_termination_completes_the_termination_hook_only(imds: StandIn) -> None:
    imds.lifecycle_state = "Terminated"
    imds.active_hook = "illustrator-ready"

    with structlog.testing.capture_logs() as logs:
        async with _watcher(imds) as watcher:
            await watcher.check()
            await watcher.complete()

    assert imds.attempts == ["illustrator-drain"]
    assert imds.completions == []
    assert any(e["event"] == "lifecycle_action_not_completed" for e in logs)


async def test_spot_interruption_is_a_notice(imds: StandIn) -> None:
    imds.spot_action = SPOT_NOTICE

    async with _watcher(imds) as watcher:
        reason = await watcher.check()

    assert reason == "spot interruption: terminate at 2026-11-24T10:02:00Z"


def test_spot_reason_of_an_unreadable_notice() -> None:
    assert spot_reason("not json") == "spot interruption"
    assert spot_reason('{"action": "stop"}') == "spot interruption: stop"


async def test_a_rejected_token_is_renewed(imds: StandIn) -> None:
    async with _watcher(imds) as watcher:
        assert await watcher.check() is None
        imds.valid_tokens.clear()  # as after the token's TTL, or an IMDS restart
        imds.lifecycle_state = "Terminated"
        assert await watcher.check() is not None

    assert imds.tokens_issued == 2


async def test_wait_for_notice_outlasts_metadata_failures(imds: StandIn) -> None:
    imds.failures_left = 1_000_000
    async with _watcher(imds) as watcher:
        waiting = asyncio.create_task(watcher.wait_for_notice())
        await eventually(lambda: imds.failures_left < 1_000_000 - 3, what="several failed polls")
        assert not waiting.done()
        imds.failures_left = 0
        imds.spot_action = SPOT_NOTICE
        reason = await asyncio.wait_for(waiting, 10)

    assert reason.startswith("spot interruption")


async def test_complete_continues_the_lifecycle_action(imds: StandIn) -> None:
    async with _watcher(imds) as watcher:
        await watcher.complete()

    [call] = imds.completions
    assert call["Action"] == "CompleteLifecycleAction"
    assert call["AutoScalingGroupName"] == GROUP
    assert call["LifecycleHookName"] == "illustrator-drain"
    assert call["InstanceId"] == INSTANCE_ID
    assert call["LifecycleActionResult"] == "CONTINUE"


async def test_a_configured_group_name_wins_over_the_tag(imds: StandIn) -> None:
    imds.tags = {}
    async with _watcher(imds, group_name="configured-group", hook_name="my-hook") as watcher:
        await watcher.complete()

    [call] = imds.completions
    assert (call["AutoScalingGroupName"], call["LifecycleHookName"]) == (
        "configured-group",
        "my-hook",
    )


async def test_complete_without_a_pending_action_only_logs(imds: StandIn) -> None:
    imds.completion_error = f"No active Lifecycle Action found with instance ID {INSTANCE_ID}"

    with structlog.testing.capture_logs() as logs:
        async with _watcher(imds) as watcher:
            await watcher.complete()

    assert imds.completions == []
    [warning] = [entry for entry in logs if entry["event"] == "lifecycle_action_not_completed"]
    assert "No active Lifecycle Action" in warning["error"]


async def test_complete_without_a_group_name_only_logs(imds: StandIn) -> None:
    imds.tags = {}

    with structlog.testing.capture_logs() as logs:
        async with _watcher(imds) as watcher:
            await watcher.complete()

    assert imds.completions == []
    assert any(entry["event"] == "lifecycle_action_not_completed" for entry in logs)


class FakeWorker:
    """Records the drain; stops when the test says so."""

    def __init__(self) -> None:
        self.drains: list[str] = []
        self.stopped = asyncio.Event()

    def request_drain(self, reason: str) -> None:
        self.drains.append(reason)

    async def wait_stopped(self) -> int:
        await self.stopped.wait()
        return 0


async def test_a_notice_drains_and_completes_only_after_the_worker_stopped(
    imds: StandIn,
) -> None:
    worker = FakeWorker()
    watch = asyncio.create_task(drain_on_notice(worker, _watcher(imds)))
    imds.lifecycle_state = "Terminated"

    await eventually(lambda: worker.drains, what="the drain request")
    assert worker.drains == ["auto scaling: instance is being terminated"]
    assert imds.completions == []  # still draining
    worker.stopped.set()
    await asyncio.wait_for(watch, 10)

    assert len(imds.completions) == 1


async def test_a_worker_stopping_for_another_reason_ends_the_watch(imds: StandIn) -> None:
    worker = FakeWorker()
    watch = asyncio.create_task(drain_on_notice(worker, _watcher(imds)))
    await eventually(lambda: imds.reads, what="the first poll")

    worker.stopped.set()
    await asyncio.wait_for(watch, 10)

    assert worker.drains == []
    assert imds.completions == []


# --------------------------------------------------- `illustrator run`, end to end


def _send(stack: Stack, job_id: str) -> None:
    body: dict[str, object] = {"job_id": job_id, "kind": "memory", "user_id": "user1"}
    body |= {"prompt": "a lighthouse", "width": 64, "height": 64, "num_inference_steps": 1}
    stack.client("sqs").send_message(QueueUrl=stack.queue_url, MessageBody=json.dumps(body))


def _queue_counts(stack: Stack) -> tuple[int, int]:
    attributes = stack.client("sqs").get_queue_attributes(
        QueueUrl=stack.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


def _log_events(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["event"] for line in lines if line.startswith("{")]


@pytest.mark.parametrize(
    ("notice", "reason"),
    [("scale-in", "auto scaling"), ("spot", "spot interruption")],
)
async def test_run_drains_on_a_notice_and_then_completes_the_action(
    stack: Stack, imds: StandIn, tmp_path: Path, notice: str, reason: str
) -> None:
    stack.client("s3").put_object(
        Bucket=stack.bucket, Key="avatars/user1.png", Body=png(64, 64, "white")
    )
    log_path = tmp_path / "consumer.log"
    environment = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MODEL_PATH": "builtin:blank",
        # Longer than a poll of the watch, so the notice lands mid-job.
        "BLANK_LATENCY_MS": "3000",
        "HEALTH_HOST": "127.0.0.1",
        "HEALTH_PORT": "0",
        "LOG_FORMAT": "json",
        "EC2_LIFECYCLE_WATCH": "true",
        "EC2_LIFECYCLE_POLL_S": "0.2",
    }
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "consumer", "run", env=environment, stdout=log, stderr=log
        )
        try:
            _send(stack, "lc-1")
            _send(stack, "lc-2")
            await eventually(
                lambda: _queue_counts(stack) == (0, 2), within=30, what="a job running, one held"
            )
            await eventually(
                lambda: "generation_started" in _log_events(log_path), what="generation"
            )
            if notice == "spot":
                imds.spot_action = SPOT_NOTICE
            else:
                imds.lifecycle_state = "Terminated"
            returncode = await asyncio.wait_for(process.wait(), 60)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    print(log_path.read_text(encoding="utf-8"))  # shown when the test fails

    assert returncode == 0
    # SQS hands the two out in either order: one ran to the end, the one
    # held went back to the queue at once.
    [event] = stack.events(wait_s=1)
    assert event["status"] == "succeeded"
    assert _queue_counts(stack) == (1, 0)
    [left] = stack.client("sqs").receive_message(QueueUrl=stack.queue_url)["Messages"]
    assert {event["job_id"], json.loads(left["Body"])["job_id"]} == {"lc-1", "lc-2"}
    [call] = imds.completions
    assert (call["InstanceId"], call["LifecycleActionResult"]) == (INSTANCE_ID, "CONTINUE")
    events = _log_events(log_path)
    assert events.index("lifecycle_notice") < events.index("drain_requested")
    assert events.index("job_succeeded") < events.index("worker_stopped")
    assert events.index("worker_stopped") < events.index("lifecycle_action_completed")
    notices = [
        json.loads(line)
        for line in log_path.read_text(encoding="utf-8").splitlines()
        if '"lifecycle_notice"' in line
    ]
    assert notices[0]["reason"].startswith(reason)
