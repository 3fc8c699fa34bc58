"""The retry decision as a table: severity and attempt to an action, no queue."""

from __future__ import annotations

import pytest

from consumer.delivery.retry_policy import Action, Decision, RetryLimits, decide
from consumer.errors import Severity

LIMITS = RetryLimits(max_attempts=3, backoff_base_s=10.0, backoff_max_s=25.0)
T, P, F = Severity.TRANSIENT, Severity.PERMANENT, Severity.FATAL


@pytest.mark.parametrize(
    ("severity", "attempt", "expected"),
    [
        (T, 1, Decision(Action.RETRY_LATER, 10)),
        (T, 2, Decision(Action.RETRY_LATER, 20)),
        (T, 3, Decision(Action.DEAD_LETTER)),  # the last attempt
        (T, 9, Decision(Action.DEAD_LETTER)),  # beyond it (a redriven request)
        (P, 1, Decision(Action.DEAD_LETTER)),
        (P, 3, Decision(Action.DEAD_LETTER)),
        (F, 1, Decision(Action.STOP_WORKER, 0)),
        (F, 3, Decision(Action.STOP_WORKER, 0)),  # fatal wins over the last attempt
    ],
)
def test_the_retry_table(severity: Severity, attempt: int, expected: Decision) -> None:
    assert decide(severity, attempt, LIMITS) == expected


def test_the_backoff_is_capped() -> None:
    limits = RetryLimits(max_attempts=10, backoff_base_s=10.0, backoff_max_s=25.0)
    assert decide(T, 5, limits) == Decision(Action.RETRY_LATER, 25)


def test_one_attempt_means_no_retry() -> None:
    limits = RetryLimits(max_attempts=1, backoff_base_s=1.0, backoff_max_s=1.0)
    assert decide(T, 1, limits).action is Action.DEAD_LETTER
