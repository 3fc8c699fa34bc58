"""Start-up checks: a configuration that cannot work stops the worker before the model loads.

Each case is a real answer of moto's server on loopback (no such queue,
topic or bucket, no credentials, an endpoint that does not answer), through
the production clients; the loader records whether a model load began.
"""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from consumer.cli.main import main
from consumer.delivery.options import WorkerOptions
from consumer.delivery.worker import EXIT_FATAL
from consumer.delivery.worker_state import StatusBoard
from consumer.errors import ConfigError
from consumer.service.preflight import check_resources
from consumer.service.wiring import serve
from consumer.settings import Settings
from pipeline.api.interface import Generator
from tests.support.aws import Stack
from tests.support.fakes import FakeClock
from tests.support.helpers import eventually, settings

pytestmark = pytest.mark.timeout(60)


class Loader:
    """A model loader that only records that it was asked."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, settings: Settings, gpu: Any) -> Generator:
        self.calls += 1
        raise AssertionError("the model must not load when the configuration cannot work")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _refused(configured: Settings) -> str:
    loader = Loader()
    with pytest.raises(ConfigError) as raised:
        await serve(configured, loader, options=WorkerOptions(burst=True), handle_signals=False)
    assert loader.calls == 0
    return raised.value.message


@pytest.mark.parametrize(
    ("field", "suffix", "named", "says"),
    [
        ("sqs_queue_url", "-gone", "SQS_QUEUE_URL", "The specified queue does not exist"),
        ("sqs_dlq_url", "-gone", "SQS_DLQ_URL", "The specified queue does not exist"),
        ("sns_topic_arn", "-gone", "SNS_TOPIC_ARN", "GetTopicAttributes: NotFound"),
        ("s3_bucket_name", "-gone", "S3_BUCKET_NAME", "GetBucketLocation: NoSuchBucket"),
    ],
)
async def test_a_resource_that_does_not_exist_is_named_before_the_model_loads(
    stack: Stack, field: str, suffix: str, named: str, says: str
) -> None:
    value = {
        "sqs_queue_url": stack.queue_url,
        "sqs_dlq_url": stack.dlq_url,
        "sns_topic_arn": stack.topic_arn,
        "s3_bucket_name": stack.bucket,
    }[field] + suffix
    message = await _refused(settings(**{field: value}))
    assert message.startswith(f"{named}={value}: ")
    assert says in message


async def test_the_request_queues_dead_letter_queue_is_checked_too(stack: Stack) -> None:
    sqs = stack.client("sqs")
    url = sqs.create_queue(QueueName=stack.queue_url.rsplit("/", 1)[1] + "-gone")["QueueUrl"]
    gone = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    gone = gone["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": gone, "maxReceiveCount": "10"})
    sqs.set_queue_attributes(QueueUrl=stack.queue_url, Attributes={"RedrivePolicy": policy})
    sqs.delete_queue(QueueUrl=url)  # deleted since: the policy names a queue that is gone
    message = await _refused(settings())
    assert message.startswith(f"SQS_QUEUE_URL RedrivePolicy deadLetterTargetArn={gone}: ")


async def test_the_bucket_is_read_where_the_model_lies(stack: Stack) -> None:
    # The fleet's role may list the model prefix only: the bucket is read there.
    source = f"s3://{stack.bucket}-gone/models/sdxl/"
    configured = settings(
        model_path="builtin:tiny", model_s3_path=source, s3_bucket_name=f"{stack.bucket}-gone"
    )
    message = await _refused(configured)
    assert message.startswith(f"S3_BUCKET_NAME={stack.bucket}-gone (listing models/sdxl/): ")
    assert "ListObjectsV2: NoSuchBucket" in message


async def test_a_malformed_topic_arn_is_refused_without_asking(stack: Stack) -> None:
    message = await _refused(settings(sns_topic_arn="completions"))
    assert message == "SNS_TOPIC_ARN=completions: not an SNS topic ARN (arn:aws:sns:...)"


def test_no_credentials_exit_two_naming_the_first_resource(
    stack: Stack,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("MODEL_PATH", "builtin:blank")
    monkeypatch.setenv("HEALTH_PORT", "0")
    assert main(["run", "--burst"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    # Every check fails alike; the one named is the first to be refused.
    named = {
        f"SQS_QUEUE_URL={stack.queue_url}",
        f"SQS_DLQ_URL={stack.dlq_url}",
        f"SNS_TOPIC_ARN={stack.topic_arn}",
        f"S3_BUCKET_NAME={stack.bucket}",
    }
    setting, _, reason = last.removeprefix("illustrator: ").partition(": ")
    assert setting in named
    assert reason == "no AWS credentials found (environment, profile or instance role)"


async def test_an_outage_at_start_is_waited_out_as_paused_then_exits_one(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing listens on this port: SNS is out for as long as the test lasts.
    monkeypatch.setenv("AWS_ENDPOINT_URL_SNS", f"http://127.0.0.1:{_free_port()}")
    port = _free_port()
    configured = settings(health_port=port, startup_timeout_s=2)
    loader = Loader()
    task = asyncio.create_task(
        serve(configured, loader, options=WorkerOptions(burst=True), handle_signals=False)
    )

    def health() -> dict[str, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return {}
        except urllib.error.HTTPError as error:
            body: dict[str, Any] = json.loads(error.read())
            return body
        except OSError:
            return {}

    async def paused() -> dict[str, Any] | None:
        body = await asyncio.to_thread(health)
        return body if body.get("status") == "paused" else None

    answer = await eventually(paused, what="/health paused", within=10)
    assert (answer["state"], answer["services"], answer["model"]) == ("paused", ["sns"], None)
    assert await task == EXIT_FATAL
    assert loader.calls == 0


async def test_an_outage_that_ends_is_retried_until_the_service_answers() -> None:
    clock, board = FakeClock(), StatusBoard(FakeClock())
    seen: list[list[str]] = []
    outage = EndpointConnectionError(endpoint_url="https://sns.us-east-1.amazonaws.com/")

    class Flaky:
        def __init__(self, failures: int) -> None:
            self.failures = failures

        async def get_topic_attributes(self, **_: Any) -> dict[str, Any]:
            seen.append(board.paused_by())
            if self.failures:
                self.failures -= 1
                raise outage
            return {"Attributes": {}}

    class Answers:
        async def get_queue_attributes(self, **_: Any) -> dict[str, Any]:
            return {"Attributes": {}}

        async def get_bucket_location(self, **_: Any) -> dict[str, Any]:
            return {}

    clients: Any = type("Clients", (), {"sqs": Answers(), "sns": Flaky(3), "s3": Answers()})()
    configured = Settings(
        sqs_queue_url="https://sqs/q", sns_topic_arn="arn:aws:sns:us-east-1:1:t", s3_bucket_name="b"
    )
    await check_resources(configured, clients, clock, board)
    assert seen == [[], ["sns"], ["sns"], ["sns"]]
    assert board.paused_by() == []
    assert clock.now_s > 1000.0  # it backed off between the attempts


async def test_access_denied_is_definitive() -> None:
    denied = ClientError(
        {
            "Error": {
                "Code": "AccessDenied",
                "Message": "User: arn:aws:sts::1:assumed-role/worker/i-1 is not authorized "
                "to perform: SNS:GetTopicAttributes on resource: arn:aws:sns:us-east-1:1:t",
            },
            "ResponseMetadata": {"HTTPStatusCode": 403},
        },
        "GetTopicAttributes",
    )

    class Denied:
        async def get_topic_attributes(self, **_: Any) -> dict[str, Any]:
            raise denied

    class Answers:
        async def get_queue_attributes(self, **_: Any) -> dict[str, Any]:
            return {"Attributes": {}}

    clients: Any = type("Clients", (), {"sqs": Answers(), "sns": Denied(), "s3": None})()
    configured = Settings(
        sqs_queue_url="https://sqs/q", sns_topic_arn="arn:aws:sns:us-east-1:1:t", s3_bucket_name="b"
    )
    with pytest.raises(ConfigError) as raised:
        await check_resources(configured, clients, FakeClock(), StatusBoard(FakeClock()))
    assert raised.value.message == (
        "SNS_TOPIC_ARN=arn:aws:sns:us-east-1:1:t: GetTopicAttributes: AccessDenied: User: "
        "arn:aws:sts::1:assumed-role/worker/i-1 is not authorized to perform: "
        "SNS:GetTopicAttributes on resource: arn:aws:sns:us-east-1:1:t"
    )
