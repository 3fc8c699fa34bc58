"""Which queue is asked first: the priority queue's share of what is taken is bounded."""

from __future__ import annotations

import pytest

from consumer.delivery.sources import PriorityShare


def _flood(share: float, takes: int) -> list[bool]:
    """Whom a worker takes from when both queues always have work (True: priority)."""
    gate = PriorityShare(share)
    order = []
    for _ in range(takes):
        priority = gate.priority_first()
        gate.took(priority, 1)
        order.append(priority)
    return order


@pytest.mark.parametrize("share", [0.5, 0.8, 0.9])
def test_with_both_queues_busy_the_priority_queue_gets_its_share(share: float) -> None:
    order = _flood(share, 200)
    assert sum(order) / len(order) == pytest.approx(share, abs=0.02)
    # No long run of either: the request queue moves at least once every
    # 1 / (1 - share) takes (and a little more, the window rounding).
    longest = max(len(run) for run in "".join("P" if p else "n" for p in order).split("n"))
    assert longest <= round(1 / (1 - share))


def test_share_one_always_asks_the_priority_queue_first() -> None:
    assert all(_flood(1.0, 50))


def test_an_idle_request_queue_costs_the_priority_queue_nothing() -> None:
    gate = PriorityShare(0.8)
    # The priority queue had all of the last takes; the request queue is
    # asked first, is empty, and the priority queue gives again.
    gate.took(True, PriorityShare.WINDOW)
    assert not gate.priority_first()
    gate.took(True, 1)  # what the worker then took
    assert not gate.priority_first()


def test_a_priority_request_after_a_backlog_goes_first() -> None:
    gate = PriorityShare(0.8)
    gate.took(False, 2)
    assert gate.priority_first()
    # Only the recent takes count: a long quiet past earns no burst beyond the window.
    gate.took(False, 1000)
    order = []
    for _ in range(PriorityShare.WINDOW * 2):
        priority = gate.priority_first()
        gate.took(priority, 1)
        order.append(priority)
    assert all(order[:16])
    assert sum(order) / len(order) <= 0.85
