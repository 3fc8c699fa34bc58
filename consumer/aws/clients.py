"""The one aioboto3 session, the client configuration, and the worker's clients.

Endpoints and credentials come from the standard AWS chain, so
``AWS_ENDPOINT_URL`` points everything at moto's server in tests and in the
demo. Retries are botocore's adaptive mode: exponential backoff with jitter
and client-side rate limiting when throttled.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aioboto3
from aiobotocore.config import AioConfig

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_secretsmanager import SecretsManagerClient
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sqs import SQSClient

MAX_POOL_CONNECTIONS = 32


def client_config(
    *, connect_timeout: float = 5.0, read_timeout: float = 30.0, max_attempts: int = 5
) -> AioConfig:
    """The client configuration: adaptive retries and a pooled connector.

    `max_attempts` counts every attempt, the first included: 5 is one call and
    up to four retries, and ``max_attempts=1`` turns retries off, for probing an
    API the endpoint may not have (retrying would only repeat the same
    refusal). botocore's own ``max_attempts`` key counts retries only, so
    ``total_max_attempts`` is the one set. `read_timeout` must exceed the SQS
    long-poll wait (20 s).
    """
    return AioConfig(
        retries={"mode": "adaptive", "total_max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=MAX_POOL_CONNECTIONS,
        tcp_keepalive=True,
    )


def make_session(region: str) -> aioboto3.Session:
    """An aioboto3 session in `region`; clients are made from it per service."""
    return aioboto3.Session(region_name=region)


@dataclass(frozen=True, slots=True)
class AwsClients:
    """Open aioboto3 clients for SQS, S3 and SNS, and Secrets Manager when
    the signing tokens come from there."""

    sqs: SQSClient
    s3: S3Client
    sns: SNSClient
    secrets: SecretsManagerClient | None = None


@asynccontextmanager
async def open_clients(
    region: str,
    *,
    secrets: bool = False,
    max_attempts: int = 5,
    session: aioboto3.Session | None = None,
) -> AsyncIterator[AwsClients]:
    """Pooled clients with adaptive retries, closed on exit (`secrets`: with
    a Secrets Manager client).

    Endpoints and credentials come from the standard AWS chain. `max_attempts`
    as in :func:`client_config` (1: the caller does its own retrying). Clients
    of one `session` share its loaded service models, which makes the second
    set much quicker to open.
    """
    session = session or make_session(region)
    config = client_config(max_attempts=max_attempts)
    async with (
        session.client("sqs", config=config) as sqs,
        session.client("s3", config=config) as s3,
        session.client("sns", config=config) as sns,
        AsyncExitStack() as stack,
    ):
        manager = None
        if secrets:
            manager = await stack.enter_async_context(
                session.client("secretsmanager", config=config)
            )
        yield AwsClients(sqs=sqs, s3=s3, sns=sns, secrets=manager)
