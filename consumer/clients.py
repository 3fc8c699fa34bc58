"""The AWS clients a worker uses, opened together from one session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from consumer.aws import client_config, make_session

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sqs import SQSClient


@dataclass(frozen=True, slots=True)
class AwsClients:
    """Open aioboto3 clients for SQS, S3 and SNS."""

    sqs: SQSClient
    s3: S3Client
    sns: SNSClient


@asynccontextmanager
async def open_clients(region: str) -> AsyncIterator[AwsClients]:
    """Pooled clients with adaptive retries, closed on exit.

    Endpoints and credentials come from the standard AWS chain.
    """
    session = make_session(region)
    config = client_config()
    async with (
        session.client("sqs", config=config) as sqs,
        session.client("s3", config=config) as s3,
        session.client("sns", config=config) as sns,
    ):
        yield AwsClients(sqs=sqs, s3=s3, sns=sns)
