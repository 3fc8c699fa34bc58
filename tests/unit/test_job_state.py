"""A job's states: the allowed moves, the slot given back once, withdrawal."""

from __future__ import annotations

import concurrent.futures
from typing import Any

import pytest

from consumer.delivery.job import Job
from consumer.delivery.job_state import (
    TRANSITIONS,
    InvalidTransition,
    JobState,
    is_end,
)
from tests.support.fakes import FakeClock, message

S = JobState


class SlotCounter:
    """Counts how often a job gives its slot back."""

    def __init__(self) -> None:
        self.released = 0

    def __call__(self) -> None:
        self.released += 1


def job(slot: SlotCounter | None = None) -> Job:
    heartbeat: Any = None  # the state machine never touches it
    return Job(message(), FakeClock(), heartbeat, release_slot=slot or SlotCounter())


LIVES = [
    pytest.param([S.GENERATING, S.DELIVERING, S.REPORTED, S.SUCCEEDED], id="drawn"),
    pytest.param([S.DELIVERING, S.REPORTED, S.REUSED], id="reused"),
    pytest.param([S.SETTLING, S.REPORTED, S.FAILED], id="bad-request"),
    pytest.param([S.GENERATING, S.SETTLING, S.RETRY], id="transient"),
    pytest.param([S.GENERATING, S.TIMED_OUT, S.SETTLING, S.RETRY], id="deadline"),
    pytest.param([S.GENERATING, S.SETTLING, S.FATAL], id="fatal"),
    pytest.param([S.GENERATING, S.DELIVERING, S.REPORTED, S.RETRY], id="delete-failed"),
    pytest.param([S.GENERATING, S.RELEASED], id="drain-timeout"),
    pytest.param([S.WITHDRAWN], id="withdrawn"),
]


@pytest.mark.parametrize("path", LIVES)
def test_each_life_gives_the_slot_back_exactly_once(path: list[JobState]) -> None:
    slot = SlotCounter()
    subject = job(slot)
    for state in path:
        subject.advance(state)
    assert subject.state is path[-1]
    assert is_end(subject.state)
    assert slot.released == 1


def test_the_slot_is_held_until_the_gpu_is_done() -> None:
    slot = SlotCounter()
    subject = job(slot)
    subject.advance(S.GENERATING)
    subject.advance(S.TIMED_OUT)
    assert slot.released == 0
    subject.advance(S.SETTLING)
    assert slot.released == 1


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (S.RECEIVED, S.REPORTED),  # an event before any stage
        (S.DELIVERING, S.GENERATING),  # backwards
        (S.SETTLING, S.SUCCEEDED),  # a failure cannot end as a success
        (S.TIMED_OUT, S.WITHDRAWN),  # the GPU has it: it cannot be withdrawn
        (S.SUCCEEDED, S.RELEASED),  # an end is final
        (S.WITHDRAWN, S.GENERATING),
    ],
)
def test_moves_outside_the_table_raise(before: JobState, after: JobState) -> None:
    assert after not in TRANSITIONS[before]
    subject = job()
    subject.state = before
    with pytest.raises(InvalidTransition, match=f"from {before} to {after}"):
        subject.advance(after)
    assert subject.state is before


def test_every_state_is_in_the_table_and_ends_lead_nowhere() -> None:
    assert set(TRANSITIONS) == set(JobState)
    for state, targets in TRANSITIONS.items():
        assert (targets == frozenset()) == is_end(state), state
        assert state not in targets


def test_end_records_the_outcome_and_a_fatal_reason() -> None:
    subject = job()
    subject.advance(S.SETTLING)
    assert subject.end(S.FATAL, "the GPU is wedged") is S.FATAL
    assert (subject.state, subject.outcome, subject.fatal_reason) == (
        S.FATAL,
        S.FATAL,
        "the GPU is wedged",
    )


def test_a_reported_outcome_is_kept_for_the_end() -> None:
    subject = job()
    subject.advance(S.DELIVERING)
    subject.advance(S.REPORTED, S.REUSED)
    assert subject.outcome is S.REUSED
    assert subject.committed


def test_abandon_ends_a_cut_job_once_and_leaves_an_ended_one() -> None:
    slot = SlotCounter()
    subject = job(slot)
    subject.advance(S.GENERATING)
    subject.abandon()
    subject.abandon()
    assert (subject.state, slot.released) == (S.RELEASED, 1)
    ended = job()
    ended.advance(S.WITHDRAWN)
    ended.abandon()
    assert ended.state is S.WITHDRAWN


def test_withdraw_before_the_gpu_and_while_queued_on_it() -> None:
    fresh = job()
    assert fresh.withdraw()
    assert fresh.state is S.WITHDRAWN
    queued = job()
    queued.advance(S.GENERATING)
    queued.gpu_future = concurrent.futures.Future()
    assert queued.withdraw()
    assert queued.gpu_future.cancelled()
    assert queued.state is S.WITHDRAWN


def test_withdraw_refuses_a_running_or_committed_job() -> None:
    running = job()
    running.advance(S.GENERATING)
    running.gpu_future = concurrent.futures.Future()
    assert running.gpu_future.set_running_or_notify_cancel()
    assert not running.withdraw()
    assert running.state is S.GENERATING
    delivering = job()
    delivering.advance(S.DELIVERING)
    assert not delivering.withdraw()
    assert delivering.committed
