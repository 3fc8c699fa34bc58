"""The contract's retry backoff and the loop's jittered backoff, as pure functions."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.delivery.backoff import SQS_MAX_VISIBILITY_S, JitteredBackoff, retry_delay


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(1, 10), (2, 20), (3, 40), (4, 80), (5, 160), (6, 320), (7, 640), (8, 900), (50, 900)],
)
def test_retry_delay_doubles_from_the_base_up_to_the_cap(attempt: int, expected: int) -> None:
    assert retry_delay(attempt, 10, 900) == expected


def test_retry_delay_rounds_up_to_whole_seconds_and_respects_sqs() -> None:
    assert retry_delay(1, 0.5, 900) == 1
    assert retry_delay(1, 0, 900) == 0
    assert retry_delay(0, 10, 900) == 10  # attempts count from 1
    assert retry_delay(100_000, 10, 10**9) == SQS_MAX_VISIBILITY_S


@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    base=st.floats(min_value=0, max_value=1000, allow_nan=False),
    cap=st.floats(min_value=0, max_value=43_200, allow_nan=False),
)
def test_retry_delay_is_bounded_and_monotonic(attempt: int, base: float, cap: float) -> None:
    delay = retry_delay(attempt, base, cap)
    assert 0 <= delay <= max(0, int(cap) + 1)
    assert delay <= retry_delay(attempt + 1, base, cap)


def test_jittered_backoff_grows_never_spins_and_resets() -> None:
    backoff = JitteredBackoff(1.0, 8.0, rng=random.Random(4))
    delays = [backoff.next_delay() for _ in range(6)]
    steps = [1, 2, 4, 8, 8, 8]
    for delay, step in zip(delays, steps, strict=True):
        assert step / 2 <= delay <= step
    assert backoff.failures == 6
    backoff.reset()
    assert backoff.failures == 0
    assert backoff.next_delay() <= 1.0


def test_jitter_spreads_workers_apart() -> None:
    delays = {JitteredBackoff(1.0, 60.0, rng=random.Random(n)).next_delay() for n in range(20)}
    assert len(delays) == 20
