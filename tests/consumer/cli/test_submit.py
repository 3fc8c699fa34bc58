"""`illustrator submit` against moto: validation, signing, upload, and --wait."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from consumer.cli import main as cli
from consumer.contract.event import CompletionEvent, EventError, OutputRef, utc_timestamp
from consumer.contract.keys import output_key, s3_uri
from consumer.contract.signing import verify
from consumer.settings import GenerationDefaults
from pipeline.api.spec import JobKind
from tests.support.aws import Stack
from tests.support.helpers import png

TOKEN = "test-signing-token-0123456789"


def _requests(stack: Stack, wait_s: int = 0) -> list[dict[str, Any]]:
    sqs = stack.client("sqs")
    response = sqs.receive_message(
        QueueUrl=stack.queue_url,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=wait_s,
        MessageAttributeNames=["All"],
    )
    messages: list[dict[str, Any]] = response.get("Messages", [])
    return messages


def _event(request: dict[str, Any], bucket: str, status: str = "succeeded") -> CompletionEvent:
    kind = JobKind(request["kind"])
    key = output_key(GenerationDefaults(), request["user_id"], kind, request["job_id"])
    failed = status == "failed"
    return CompletionEvent(
        job_id=request["job_id"],
        kind=kind.value,
        user_id=request["user_id"],
        status="failed" if failed else "succeeded",
        data=None if failed else [OutputRef(s3_uri=s3_uri(bucket, key))],
        error=EventError(code="invalid_input", message="not an image", retryable=False)
        if failed
        else None,
        model="builtin:blank",
        attempts=1,
        worker_id="stand-in",
        finished_at=utc_timestamp(dt.datetime.now(dt.UTC)),
        sqs_message_id="m-1",
    )


def _stand_in_worker(stack: Stack, status: str = "succeeded", timeout_s: float = 30) -> bytes:
    """Play the consumer for one request: write its PNG, announce it (after a
    decoy event for another job), delete it. Returns the PNG written."""
    deadline = time.monotonic() + timeout_s
    messages: list[dict[str, Any]] = []
    while not messages:
        assert time.monotonic() < deadline, "no request arrived"
        messages = _requests(stack, wait_s=1)
    request = json.loads(messages[0]["Body"])
    picture = png(64, 64, "blue")
    event = _event(request, stack.bucket, status)
    if event.data:
        key = output_key(
            GenerationDefaults(), request["user_id"], JobKind(request["kind"]), request["job_id"]
        )
        stack.client("s3").put_object(Bucket=stack.bucket, Key=key, Body=picture)
    sns = stack.client("sns")
    decoy = event.model_copy(update={"job_id": "someone-else"})
    for published in (decoy, event):
        sns.publish(
            TopicArn=stack.topic_arn,
            Message=published.to_json(),
            MessageAttributes=published.attributes(),
        )
    stack.client("sqs").delete_message(
        QueueUrl=stack.queue_url, ReceiptHandle=messages[0]["ReceiptHandle"]
    )
    return picture


def _leftovers(stack: Stack, job_id: str) -> tuple[list[str], list[str]]:
    """Wait queues tagged with `job_id`, and topic subscriptions besides the observer's."""
    sqs = stack.client("sqs")
    urls = sqs.list_queues(QueueNamePrefix="illustrator-wait-").get("QueueUrls", [])
    queues = [
        u for u in urls if sqs.list_queue_tags(QueueUrl=u).get("Tags", {}).get("job-id") == job_id
    ]
    observer_arn = sqs.get_queue_attributes(
        QueueUrl=stack.observer_url, AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    subscriptions = stack.client("sns").list_subscriptions_by_topic(TopicArn=stack.topic_arn)
    others = [
        s["SubscriptionArn"]
        for s in subscriptions["Subscriptions"]
        if s["Endpoint"] != observer_arn
    ]
    return queues, others


def test_invalid_request_is_refused_before_sending(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main(["submit", "memory", "--user-id", "user1", "--width", "100"])

    assert status == 2
    err = capsys.readouterr().err
    assert "invalid request" in err
    assert "prompt is required" in err or "width" in err
    assert _requests(stack) == []


def test_submit_sends_a_contract_request(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["submit", "subject", "--user-id", "user-7", "--job-id", "s-100", "--seed", "42"]
    argv += ["--steps", "12", "--width", "512", "--height", "768", "--style-prompt", "ink"]

    assert cli.main(argv) == 0

    assert capsys.readouterr().out.strip() == "s-100"
    [message] = _requests(stack)
    assert json.loads(message["Body"]) == {
        "version": 1,
        "job_id": "s-100",
        "kind": "subject",
        "user_id": "user-7",
        "style_prompt": "ink",
        "num_inference_steps": 12,
        "seed": 42,
        "width": 512,
        "height": 768,
    }
    assert "MessageAttributes" not in message


def test_submit_signs_when_auth_is_enabled(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUTH_ENABLED", "true")
    monkeypatch.setenv("AUTH_TOKEN", TOKEN)

    assert cli.main(["submit", "memory", "--user-id", "u1", "--prompt", "a walk"]) == 0

    [message] = _requests(stack)
    signature = message["MessageAttributes"]["signature"]["StringValue"]
    verify(message["Body"].encode("utf-8"), signature, TOKEN)
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err


def test_submit_signs_with_the_current_token_of_the_token_file(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN}\nretired-token\n")
    tokens.chmod(0o600)
    monkeypatch.setenv("AUTH_ENABLED", "true")
    monkeypatch.setenv("AUTH_TOKEN_FILE", str(tokens))

    assert cli.main(["submit", "memory", "--user-id", "u1", "--prompt", "a walk"]) == 0

    [message] = _requests(stack)
    signature = message["MessageAttributes"]["signature"]["StringValue"]
    verify(message["Body"].encode("utf-8"), signature, TOKEN)


def test_image_is_uploaded_as_the_users_picture(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    picture = tmp_path / "Me.JPG"
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "green").save(buffer, format="JPEG")
    picture.write_bytes(buffer.getvalue())

    argv = ["submit", "memory", "--user-id", "u2", "--prompt", "beach", "--image", str(picture)]
    assert cli.main(argv) == 0

    head = stack.client("s3").get_object(Bucket=stack.bucket, Key="avatars/u2.jpg")
    assert head["ContentType"] == "image/jpeg"
    assert head["Body"].read() == picture.read_bytes()
    [message] = _requests(stack)
    assert json.loads(message["Body"])["image_key"] == "avatars/u2.jpg"
    assert "uploaded" in capsys.readouterr().err


def test_image_of_an_unknown_type_is_refused(stack: Stack, tmp_path: Path) -> None:
    picture = tmp_path / "me.gif"
    picture.write_bytes(b"GIF89a")

    argv = ["submit", "subject", "--user-id", "u3", "--image", str(picture)]
    assert cli.main(argv) == 2
    assert _requests(stack) == []


async def test_wait_prints_the_event_and_saves_the_picture(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "result" / "picture.png"
    argv = ["submit", "memory", "--user-id", "u4", "--prompt", "a cat", "--job-id", "m-wait"]
    argv += ["--wait", "--timeout", "30", "--out", str(out)]

    status, picture = await asyncio.gather(
        asyncio.to_thread(cli.main, argv), asyncio.to_thread(_stand_in_worker, stack)
    )

    assert status == 0
    captured = capsys.readouterr()
    event = json.loads(captured.out)
    assert (event["job_id"], event["status"]) == ("m-wait", "succeeded")
    assert out.read_bytes() == picture
    assert f"saved {out}" in captured.err
    assert _leftovers(stack, "m-wait") == ([], [])


async def test_wait_reports_a_failed_job(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["submit", "subject", "--user-id", "u5", "--job-id", "s-fail", "--wait"]

    status, _ = await asyncio.gather(
        asyncio.to_thread(cli.main, argv),
        asyncio.to_thread(_stand_in_worker, stack, "failed"),
    )

    assert status == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["error"]["code"] == "invalid_input"
    assert "failed: invalid_input" in captured.err
    assert not await asyncio.to_thread(Path("subject_s-fail.png").exists)
    assert _leftovers(stack, "s-fail") == ([], [])


def test_wait_gives_up_after_the_timeout(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "submit",
        "subject",
        "--user-id",
        "u6",
        "--job-id",
        "s-late",
        "--wait",
        "--timeout",
        "1",
    ]

    assert cli.main(argv) == 3

    err = capsys.readouterr().err
    assert "no event for job s-late within 1s" in err
    assert "generated/u6/subject_s-late.png" in err
    assert _leftovers(stack, "s-late") == ([], [])


def test_out_without_wait_is_a_usage_error(stack: Stack) -> None:
    assert cli.main(["submit", "subject", "--user-id", "u", "--out", "x.png"]) == 2
    assert cli.main(["submit", "subject", "--user-id", "u", "--wait", "--timeout", "0"]) == 2
    assert _requests(stack) == []


async def test_wait_subscription_filters_on_the_job(stack: Stack) -> None:
    from consumer.aws.clients import client_config, make_session
    from consumer.cli.event_waiter import waiting_for

    session = make_session("us-east-1")
    sns_sync = stack.client("sns")
    async with (
        session.client("sqs", config=client_config()) as sqs,
        session.client("sns", config=client_config()) as sns,
        waiting_for(sqs, sns, stack.topic_arn, "mine") as waiter,
    ):
        for job in ("theirs", "mine"):
            sns_sync.publish(TopicArn=stack.topic_arn, Message=json.dumps({"job_id": job}))
        assert waiter.queue_url is not None
        received = stack.client("sqs").receive_message(
            QueueUrl=waiter.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        # moto honours FilterPolicyScope=MessageBody: only this job's event arrives.
        assert [json.loads(m["Body"])["job_id"] for m in received["Messages"]] == ["mine"]


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_wait_removes_its_queue_and_subscription(
    stack: Stack, signum: int, status: int
) -> None:
    job = f"m-int-{signum}"
    argv = [sys.executable, "-m", "consumer", "submit", "memory", "--user-id", "u8"]
    argv += ["--prompt", "p", "--job-id", job, "--wait", "--timeout", "120"]
    process = subprocess.Popen(
        argv, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while not _requests_visible(stack):
            assert time.monotonic() < deadline, "the request was never sent"
            assert process.poll() is None, process.communicate()
            time.sleep(0.05)
        assert _leftovers(stack, job) != ([], [])

        process.send_signal(signum)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()

    assert process.returncode == status, err
    assert _leftovers(stack, job) == ([], [])


def _requests_visible(stack: Stack) -> bool:
    attributes = stack.client("sqs").get_queue_attributes(
        QueueUrl=stack.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    return int(attributes["Attributes"]["ApproximateNumberOfMessages"]) > 0


def test_submit_groups_by_user_and_can_send_to_the_priority_queue(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    sqs = stack.client("sqs")
    priority = sqs.create_queue(QueueName=f"{stack.queue_url.rsplit('/', 1)[1]}-priority")
    monkeypatch.setenv("SQS_PRIORITY_QUEUE_URL", priority["QueueUrl"])
    argv = ["submit", "memory", "--user-id", "user-9", "--prompt", "a lake", "--job-id", "m-9"]
    assert cli.main(argv) == 0
    assert cli.main([*argv[:-1], "m-10", "--priority"]) == 0

    def received(url: str) -> list[dict[str, Any]]:
        return sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
        ).get("Messages", [])

    [normal] = received(stack.queue_url)
    [urgent] = received(priority["QueueUrl"])
    assert json.loads(normal["Body"])["job_id"] == "m-9"
    assert json.loads(urgent["Body"])["job_id"] == "m-10"
    assert normal["Attributes"]["MessageGroupId"] == "user-9"
    assert urgent["Attributes"]["MessageGroupId"] == "user-9"


@pytest.mark.parametrize(
    ("content", "pixels", "reason"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, None, "input PNG image cannot be read"),
        (b"plain text, not a picture", None, "not a PNG, JPEG or WebP"),
        (None, "100", "more than the limit of 100"),
        (png(900, 100), None, "aspect ratio is over the limit of 8"),
    ],
    ids=["corrupt", "not-a-picture", "too-many-pixels", "too-wide"],
)
def test_an_image_the_consumer_would_refuse_is_never_uploaded(
    stack: Stack,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    content: bytes | None,
    pixels: str | None,
    reason: str,
) -> None:
    if pixels is not None:
        monkeypatch.setenv("MAX_INPUT_PIXELS", pixels)
    picture = tmp_path / "me.png"
    if content is None:
        Image.new("RGB", (32, 32), "green").save(picture, format="PNG")
    else:
        picture.write_bytes(content)

    argv = ["submit", "subject", "--user-id", "u4", "--image", str(picture)]
    assert cli.main(argv) == 2

    err = capsys.readouterr().err
    assert err.startswith("illustrator submit: invalid request: --image me.png: ")
    assert reason in err
    assert len(err.strip().splitlines()) == 1
    assert stack.client("s3").list_objects_v2(Bucket=stack.bucket).get("KeyCount") == 0
    assert _requests(stack) == []
