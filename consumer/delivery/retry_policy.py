"""What to do about a failed job: a pure function of the verdict and the attempt.

The runner acts on the answer (hide the request, dead-letter it, stop the
worker); deciding apart from acting lets the whole table be tested without
a queue.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from consumer.delivery.backoff import retry_delay
from consumer.errors import Severity


class Action(enum.StrEnum):
    """What the runner does with a failed job's request."""

    RETRY_LATER = "retry_later"  # hide it for the backoff, then try again
    DEAD_LETTER = "dead_letter"  # failed event, DLQ copy, delete
    STOP_WORKER = "stop_worker"  # hand it back at once and stop the worker


@dataclass(frozen=True, slots=True)
class RetryLimits:
    """The retry policy's numbers.

    Attributes:
        max_attempts: the attempt that may no longer be retried.
        backoff_base_s, backoff_max_s: the contract's retry backoff.
    """

    max_attempts: int
    backoff_base_s: float
    backoff_max_s: float


@dataclass(frozen=True, slots=True)
class Decision:
    """The action, and for :attr:`Action.RETRY_LATER` or :attr:`Action.STOP_WORKER`
    how many seconds the request stays hidden."""

    action: Action
    hide_s: int = 0


def decide(severity: Severity, attempt: int, limits: RetryLimits) -> Decision:
    """The action for a failure of `severity` on attempt `attempt` (from 1).

    Fatal stops the worker and hands the request back at once (another
    worker may draw it); transient is retried after the backoff until the
    last attempt; anything else, or the last attempt, is dead-lettered.
    """
    if severity is Severity.FATAL:
        return Decision(Action.STOP_WORKER, 0)
    if severity is Severity.TRANSIENT and attempt < limits.max_attempts:
        delay = retry_delay(attempt, limits.backoff_base_s, limits.backoff_max_s)
        return Decision(Action.RETRY_LATER, delay)
    return Decision(Action.DEAD_LETTER)
