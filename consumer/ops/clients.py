"""aioboto3 clients for the operator commands, configured like the consumer's."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from aiobotocore.config import AioConfig
from botocore.config import Config

from consumer.aws import client_config


def _merged(base: AioConfig, other: Config) -> AioConfig:
    # AioConfig.merge takes any Config and returns an AioConfig; its stub
    # asks for (and promises) the type of `base` only.
    merge = cast(Callable[[Config], AioConfig], base.merge)
    return merge(other)


def aio_config(*, single_attempt: bool = False) -> AioConfig:
    """:func:`consumer.aws.client_config` as the AioConfig the typed clients take.

    `single_attempt` turns retries off, for probing an API the endpoint may
    not have: retrying would only repeat the same refusal.
    """
    config = _merged(AioConfig(), client_config())
    if single_attempt:
        config = _merged(config, Config(retries={"mode": "standard", "max_attempts": 1}))
    return config
