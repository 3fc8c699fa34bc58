"""An embedded AWS (moto's server on loopback) with the service's resources.

Used by `illustrator demo`, `illustrator sandbox` and the tests: everything
the consumer talks to, on this machine, with no account and no credentials. moto is a development
dependency, so it is imported only when a sandbox is started.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3

from consumer.errors import ConfigError
from pipeline.api.config import BUILTIN_TINY

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

    from consumer.settings import Settings

REGION = "us-east-1"
# Placeholders moto accepts, set for this process so that no real account
# is ever used; whatever else the AWS chain would find is hidden.
PLACEHOLDER = "sandbox"
SANDBOX_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": PLACEHOLDER,
    "AWS_SECRET_ACCESS_KEY": PLACEHOLDER,
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}
HIDDEN_ENVIRONMENT = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
# The model of a local run when neither an option nor the environment names one.
LOCAL_MODEL = BUILTIN_TINY


@dataclass(frozen=True, slots=True)
class SandboxResources:
    """What the sandbox created: the consumer's queue, DLQ, topic and bucket,
    and an observer queue subscribed to the topic to read the events."""

    endpoint: str
    queue_url: str
    dlq_url: str
    topic_arn: str
    bucket: str
    observer_url: str

    def client(self, service: str) -> Any:
        """A synchronous boto3 client on the sandbox."""
        return _client(service, self.endpoint)

    def environment(self) -> dict[str, str]:
        """The variables that point a consumer at these resources."""
        return {
            **SANDBOX_ENVIRONMENT,
            "AWS_ENDPOINT_URL": self.endpoint,
            "SQS_QUEUE_URL": self.queue_url,
            "SNS_TOPIC_ARN": self.topic_arn,
            "S3_BUCKET_NAME": self.bucket,
        }


class Sandbox:
    """moto's threaded server on 127.0.0.1 with a free port.

    With `point_environment` (the demo's case) the process environment points
    every AWS client at it until :meth:`stop`; tests leave it alone and pass
    the endpoint explicitly.
    """

    def __init__(self, *, point_environment: bool = True) -> None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as error:
            raise ConfigError(
                "the demo needs moto's server (a development dependency): "
                "run `make setup` or `pip install -e '.[dev]'`"
            ) from error
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._point_environment = point_environment
        self._saved: dict[str, str | None] = {}
        self.endpoint = ""

    def start(self) -> str:
        """Start the server and point this process's AWS clients at it."""
        # One line per request from moto's web server would drown the demo's output.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        if not self._point_environment:
            return self.endpoint
        values: dict[str, str | None] = {**SANDBOX_ENVIRONMENT, "AWS_ENDPOINT_URL": self.endpoint}
        values.update(dict.fromkeys(HIDDEN_ENVIRONMENT))
        self._saved = {name: os.environ.get(name) for name in values}
        _apply(values)
        return self.endpoint

    def stop(self) -> None:
        """Stop the server and give the environment back as it was."""
        self._server.stop()
        _apply(self._saved)
        self._saved = {}

    def client(self, service: str) -> Any:
        """A boto3 client on the sandbox."""
        return _client(service, self.endpoint)

    def create(self, name: str = "illustrator-demo") -> SandboxResources:
        """The service's resources on this sandbox (see :func:`create_resources`)."""
        return create_resources(self.endpoint, name)


def create_resources(
    endpoint: str, name: str, *, visibility_timeout: int = 60, max_receive_count: int = 3
) -> SandboxResources:
    """The request queue (with a redrive policy to its DLQ), the topic, the
    bucket, and an observer queue subscribed with raw delivery, on `endpoint`.

    Names get a random suffix, so one endpoint serves many stacks.
    """
    suffix = uuid.uuid4().hex[:8]
    sqs: SQSClient = _client("sqs", endpoint)
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq-{suffix}")["QueueUrl"]
    policy = {"deadLetterTargetArn": _arn(sqs, dlq_url), "maxReceiveCount": str(max_receive_count)}
    queue_url = sqs.create_queue(
        QueueName=f"{name}-requests-{suffix}",
        Attributes={
            "VisibilityTimeout": str(visibility_timeout),
            "RedrivePolicy": json.dumps(policy),
        },
    )["QueueUrl"]
    sns = _client("sns", endpoint)
    topic_arn = sns.create_topic(Name=f"{name}-events-{suffix}")["TopicArn"]
    observer_url = sqs.create_queue(QueueName=f"{name}-observer-{suffix}")["QueueUrl"]
    sns.subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=_arn(sqs, observer_url),
        Attributes={"RawMessageDelivery": "true"},
    )
    bucket = f"{name}-{suffix}"
    s3: S3Client = _client("s3", endpoint)
    s3.create_bucket(Bucket=bucket)
    return SandboxResources(endpoint, queue_url, dlq_url, topic_arn, bucket, observer_url)


def local_model(option: str | None) -> str:
    """The model of a local run: the command's option, else ``MODEL_PATH`` from
    the process environment, else ``builtin:tiny``.

    A ``.env`` file is not consulted for it: the ``MODEL_PATH`` there (as in
    ``env.example``) names the production model, which a laptop rarely has.
    """
    return option or os.environ.get("MODEL_PATH") or LOCAL_MODEL


def local_settings(resources: SandboxResources, *, model: str, worker_id: str) -> Settings:
    """The consumer's settings for a stack on this sandbox: its resources, the
    given model, a sidecar on a free loopback port and short retry backoffs."""
    from consumer.settings import load_settings

    overrides: dict[str, Any] = {
        "sqs_queue_url": resources.queue_url,
        "sqs_dlq_url": resources.dlq_url,
        "sns_topic_arn": resources.topic_arn,
        "s3_bucket_name": resources.bucket,
        "aws_region": REGION,
        "model_path": model,
        "health_host": "127.0.0.1",
        "health_port": 0,
        "worker_id": worker_id,
        "retry_backoff_base_s": 1,
        "drain_timeout_s": 30,
    }
    return load_settings().model_copy(update=overrides)


def _client(service: str, endpoint: str) -> Any:
    make: Any = boto3.client  # typed per service name; here the name is a variable
    return make(service, endpoint_url=endpoint, region_name=REGION)


def _apply(values: dict[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _arn(sqs: SQSClient, url: str) -> str:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return attributes["Attributes"]["QueueArn"]
