"""What to do about a failed job: pure functions of the verdict, the attempt
and the request's share in its workers' deaths.

The runner acts on the answer (hide the request, dead-letter it, hand it on
and stop the worker); deciding apart from acting lets the whole table be
tested without a queue.

A request is charged a **worker death** whenever a worker dies with it in
flight. A death the worker lives to report (a fatal error: a broken or
wedged GPU, a generation past its deadline) is charged exactly, to the
request on the GPU, on the fresh copy the dying worker sends
(:func:`decide`). A silent death (SIGKILL, a lost host) leaves only the
receive count of the copy, and receives also end without a word and
without any death: a first release makes the same message visible again
rather than sending a copy, and a long poll cut by a drain, or an answer
lost on the network, takes a message that no one sees. So
:func:`charged_deaths` counts one death for every
``SILENT_ENDS_ALLOWED + 1`` receives of a copy that ended without a word;
the request is then re-sent with the death recorded, and its receive count
starts again. After ``MAX_WORKER_DEATHS`` deaths the request fails for good
as ``crashed_worker`` and no further worker is given it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from consumer.delivery.backoff import retry_delay
from consumer.errors import Severity

# Receives of one copy that may end without a word and without a death.
SILENT_ENDS_ALLOWED = 2


class Action(enum.StrEnum):
    """What the runner does with a failed job's request."""

    RETRY_LATER = "retry_later"  # hide it for the backoff, then try again
    DEAD_LETTER = "dead_letter"  # failed event, DLQ copy, delete
    HAND_ON = "hand_on"  # a fresh copy charged the death, visible at once


@dataclass(frozen=True, slots=True)
class RetryLimits:
    """The retry policy's numbers.

    Attributes:
        max_attempts: the attempt that may no longer be retried.
        backoff_base_s, backoff_max_s: the contract's retry backoff.
        max_worker_deaths: the worker deaths after which a request is
            ``crashed_worker``.
    """

    max_attempts: int
    backoff_base_s: float
    backoff_max_s: float
    max_worker_deaths: int = 2


@dataclass(frozen=True, slots=True)
class Decision:
    """The action, and what goes with it.

    Attributes:
        action: what happens to the request.
        hide_s: for :attr:`Action.RETRY_LATER`, how long it stays hidden.
        stop_worker: the worker stops after acting (a fatal failure).
        deaths: the worker deaths the request is charged with from now on
            (carried by its next copy, or named in its dead letter).
        crashed: dead-lettered as ``crashed_worker``: the last of
            ``max_worker_deaths`` deaths.
    """

    action: Action
    hide_s: int = 0
    stop_worker: bool = False
    deaths: int = 0
    crashed: bool = False


def silent_deaths(receive_count: int) -> int:
    """The deaths the receives of a copy before this one (``receive_count`` - 1)
    prove: one for every ``SILENT_ENDS_ALLOWED + 1`` of them."""
    return max(0, receive_count - 1) // (SILENT_ENDS_ALLOWED + 1)


def charged_deaths(reported: int, receive_count: int) -> int:
    """The worker deaths a delivered copy is charged with.

    `reported`: the deaths written on it (``worker_deaths``) by dying workers
    and by the workers that recorded silent ones; `receive_count`: its
    ``ApproximateReceiveCount`` (:func:`silent_deaths`).
    """
    return max(0, reported) + silent_deaths(receive_count)


def decide(severity: Severity, attempt: int, limits: RetryLimits, deaths: int = 0) -> Decision:
    """The action for a failure of `severity` on attempt `attempt` (from 1) of
    a request charged `deaths` worker deaths so far.

    Fatal stops the worker, and the request is charged the death: it is
    handed on at once as a fresh copy, or, at the last death allowed,
    dead-lettered as ``crashed_worker``. Transient is retried after the
    backoff until the last attempt; anything else, or the last attempt, is
    dead-lettered.
    """
    if severity is Severity.FATAL:
        deaths += 1
        if deaths >= limits.max_worker_deaths:
            return Decision(Action.DEAD_LETTER, stop_worker=True, deaths=deaths, crashed=True)
        return Decision(Action.HAND_ON, stop_worker=True, deaths=deaths)
    if severity is Severity.TRANSIENT and attempt < limits.max_attempts:
        delay = retry_delay(attempt, limits.backoff_base_s, limits.backoff_max_s)
        return Decision(Action.RETRY_LATER, delay, deaths=deaths)
    return Decision(Action.DEAD_LETTER, deaths=deaths)
