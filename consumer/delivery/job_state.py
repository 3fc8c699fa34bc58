"""A job's life as states, with the transitions allowed between them.

Each job moves forwards only: received, on the GPU, delivering its output
or settling a failure, reported, ended. A move the table does not allow is
a bug of the service and raises :class:`InvalidTransition` instead of
leaving the job in a state no one planned for. The table also says which
states hold one of the worker's slots (the GPU line and its prefetch) and
which are committed (a drain waits for them instead of withdrawing them).
"""

from __future__ import annotations

import enum
from typing import Literal, TypeAlias, get_args


class JobState(enum.StrEnum):
    """Where a job is in its life."""

    RECEIVED = "received"  # parsing and fetching its input; may be withdrawn
    GENERATING = "generating"  # handed to the GPU thread (possibly queued there)
    TIMED_OUT = "timed_out"  # ran past its deadline and was told to stop
    DELIVERING = "delivering"  # writing its outputs (or reusing existing ones)
    SETTLING = "settling"  # a failure or a cancellation being recorded: event, DLQ copy, backoff
    REPORTED = "reported"  # its completion event is out; the delete is left
    # Ends: the outcomes (see Outcome), and the two ways a job ends without one.
    SUCCEEDED = "succeeded"
    REUSED = "reused"
    FAILED = "failed"
    RETRY = "retry"
    CANCELLED = "cancelled"
    FATAL = "fatal"
    WITHDRAWN = "withdrawn"  # taken back before it began generating
    RELEASED = "released"  # cancelled by a shutdown; its request handed back


# How a job ended, as the runner reports it: the ends a job reaches by itself.
# A subset of the states rather than an enum of its own, so each name is
# declared once and a job ends by moving to its outcome.
Outcome: TypeAlias = Literal[
    JobState.SUCCEEDED,
    JobState.REUSED,
    JobState.FAILED,
    JobState.RETRY,
    JobState.CANCELLED,
    JobState.FATAL,
]
OUTCOMES: frozenset[JobState] = frozenset(get_args(Outcome))
_ENDS = OUTCOMES | {JobState.WITHDRAWN, JobState.RELEASED}

# Any state but an end may be cut short by a shutdown (RELEASED).
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.RECEIVED: frozenset(
        {JobState.GENERATING, JobState.DELIVERING, JobState.SETTLING, JobState.WITHDRAWN}
    ),
    JobState.GENERATING: frozenset(
        {JobState.TIMED_OUT, JobState.DELIVERING, JobState.SETTLING, JobState.WITHDRAWN}
    ),
    # A generation may still finish with its pictures as it is told to stop.
    JobState.TIMED_OUT: frozenset({JobState.DELIVERING, JobState.SETTLING}),
    JobState.DELIVERING: frozenset({JobState.REPORTED, JobState.SETTLING}),
    JobState.SETTLING: frozenset({JobState.REPORTED, JobState.RETRY, JobState.FATAL}),
    # After the event: the delete (or the DLQ copy) either succeeds, or fails
    # and the request comes back later (RETRY, or the reported outcome).
    JobState.REPORTED: frozenset(
        {JobState.SUCCEEDED, JobState.REUSED, JobState.FAILED, JobState.RETRY, JobState.CANCELLED}
    ),
    **{end: frozenset() for end in _ENDS},
}
for _state in TRANSITIONS:
    if _state not in _ENDS:
        TRANSITIONS[_state] |= {JobState.RELEASED}

# States in which the job holds a slot: it is on or waiting for the GPU line.
HOLDS_SLOT = frozenset({JobState.RECEIVED, JobState.GENERATING, JobState.TIMED_OUT})
# States a drain waits for instead of withdrawing the job.
COMMITTED = frozenset({JobState.DELIVERING, JobState.SETTLING, JobState.REPORTED}) | _ENDS


class InvalidTransition(RuntimeError):
    """A job was moved along a transition the table does not allow."""


def check_transition(current: JobState, new: JobState) -> None:
    """Raise :class:`InvalidTransition` unless `current` may move to `new`."""
    if new not in TRANSITIONS[current]:
        raise InvalidTransition(f"a job cannot move from {current} to {new}")


def is_end(state: JobState) -> bool:
    """Whether `state` ends the job's life."""
    return state in _ENDS
