"""The retry decision as a table: severity, attempt and worker deaths to an
action, and the deaths a delivered copy is charged with; no queue."""

from __future__ import annotations

import pytest

from consumer.delivery.retry_policy import (
    SILENT_ENDS_ALLOWED,
    Action,
    Decision,
    RetryLimits,
    charged_deaths,
    decide,
    silent_deaths,
)
from consumer.errors import Severity

LIMITS = RetryLimits(max_attempts=3, backoff_base_s=10.0, backoff_max_s=25.0)
T, P, F = Severity.TRANSIENT, Severity.PERMANENT, Severity.FATAL
HAND_ON, DEAD = Action.HAND_ON, Action.DEAD_LETTER


@pytest.mark.parametrize(
    ("severity", "attempt", "deaths", "expected"),
    [
        (T, 1, 0, Decision(Action.RETRY_LATER, 10)),
        (T, 2, 0, Decision(Action.RETRY_LATER, 20)),
        (T, 3, 0, Decision(DEAD)),  # the last attempt
        (T, 9, 0, Decision(DEAD)),  # beyond it (a redriven request)
        (T, 1, 1, Decision(Action.RETRY_LATER, 10, deaths=1)),  # a death is carried on
        (P, 1, 0, Decision(DEAD)),
        (P, 3, 1, Decision(DEAD, deaths=1)),
        # Fatal: the worker stops, the request is charged the death.
        (F, 1, 0, Decision(HAND_ON, stop_worker=True, deaths=1)),
        (F, 3, 0, Decision(HAND_ON, stop_worker=True, deaths=1)),  # attempts do not matter
        (F, 1, 1, Decision(DEAD, stop_worker=True, deaths=2, crashed=True)),  # the last death
        (F, 1, 5, Decision(DEAD, stop_worker=True, deaths=6, crashed=True)),
    ],
)
def test_the_retry_table(severity: Severity, attempt: int, deaths: int, expected: Decision) -> None:
    assert decide(severity, attempt, LIMITS, deaths) == expected


@pytest.mark.parametrize(
    ("max_deaths", "deaths", "action"),
    [(1, 0, DEAD), (2, 0, HAND_ON), (2, 1, DEAD), (3, 1, HAND_ON), (3, 2, DEAD)],
)
def test_the_last_death_allowed_is_the_one_that_dead_letters(
    max_deaths: int, deaths: int, action: Action
) -> None:
    limits = RetryLimits(3, 1.0, 1.0, max_worker_deaths=max_deaths)
    decision = decide(F, 1, limits, deaths)
    assert (decision.action, decision.crashed) == (action, action is DEAD)
    assert decision.stop_worker


def test_the_backoff_is_capped() -> None:
    limits = RetryLimits(max_attempts=10, backoff_base_s=10.0, backoff_max_s=25.0)
    assert decide(T, 5, limits) == Decision(Action.RETRY_LATER, 25)


def test_one_attempt_means_no_retry() -> None:
    limits = RetryLimits(max_attempts=1, backoff_base_s=1.0, backoff_max_s=1.0)
    assert decide(T, 1, limits).action is Action.DEAD_LETTER


@pytest.mark.parametrize(
    ("reported", "receive_count", "charged", "story"),
    [
        (0, 1, 0, "a first delivery"),
        (0, 2, 0, "released once (visibility 0), or one worker vanished"),
        (0, 3, 0, "a release and a receive lost to a cut long poll"),
        (0, 4, 1, "three receives without a word: at least one was a death"),
        (0, 6, 1, "five: still one (the copy is re-sent at 4 with it recorded)"),
        (0, 7, 2, "six without a word: two"),
        (1, 1, 1, "a copy a dying worker sent"),
        (1, 4, 2, "a reported death and a silent one"),
        (2, 1, 2, "two reported deaths"),
        (-3, 1, 0, "a nonsense count is no credit"),
    ],
)
def test_the_deaths_a_copy_is_charged_with(
    reported: int, receive_count: int, charged: int, story: str
) -> None:
    assert charged_deaths(reported, receive_count) == charged, story


def test_the_allowance_is_two_silent_ends_a_death() -> None:
    # One for a first release (the same message made visible again) and one
    # for a receive no one saw (a long poll cut by a drain, a lost answer).
    assert SILENT_ENDS_ALLOWED == 2
    assert [silent_deaths(count) for count in range(1, 11)] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]
