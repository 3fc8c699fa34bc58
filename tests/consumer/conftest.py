"""Fixtures of the consumer tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.aws import Stack, make_stack


@pytest.fixture
def make_env_stack(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Stack]:
    """Make a stack with its own queue settings and point the environment at it."""

    def make(*, visibility_timeout: int = 30, max_receive_count: int = 3) -> Stack:
        created = make_stack(
            moto_endpoint,
            visibility_timeout=visibility_timeout,
            max_receive_count=max_receive_count,
        )
        for name, value in created.environment().items():
            monkeypatch.setenv(name, value)
        return created

    return make
