"""The one aioboto3 session and the client configuration every command uses.

Endpoints and credentials come from the standard AWS chain, so
``AWS_ENDPOINT_URL`` points everything at moto's server in tests and in the
demo. Retries are botocore's adaptive mode: exponential backoff with jitter
and client-side rate limiting when throttled.
"""

from __future__ import annotations

import aioboto3
from aiobotocore.config import AioConfig

MAX_POOL_CONNECTIONS = 32


def client_config(
    *, connect_timeout: float = 5.0, read_timeout: float = 30.0, max_attempts: int = 5
) -> AioConfig:
    """The client configuration: adaptive retries and a pooled connector.

    `read_timeout` must exceed the SQS long-poll wait (20 s). `max_attempts=1`
    turns retries off, for probing an API the endpoint may not have: retrying
    would only repeat the same refusal.
    """
    return AioConfig(
        retries={"mode": "adaptive", "max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=MAX_POOL_CONNECTIONS,
        tcp_keepalive=True,
    )


def make_session(region: str) -> aioboto3.Session:
    """An aioboto3 session in `region`; clients are made from it per service."""
    return aioboto3.Session(region_name=region)
