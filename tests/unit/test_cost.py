"""A request's cost, and the generation deadline each cost gets: a table."""

from __future__ import annotations

import pytest

from consumer.contract.budget import check_cost, check_group, check_prompt_tokens
from consumer.delivery.deadline import deadline_s
from consumer.errors import InvalidRequest
from pipeline.api.batch import batch_cost
from pipeline.api.limits import REFERENCE_COST, REQUEST_COST, request_cost
from tests.support.specs import spec

TIMEOUT_S = 600.0  # GENERATION_TIMEOUT_S's default
MAX_COST = float(REQUEST_COST.maximum)

# steps, pictures, width, height -> cost, deadline (s) at the default timeout.
TABLE = [
    (1, 1, 64, 64, 1 / 256, 600),
    (4, 1, 1024, 1024, 4, 600),  # a few-step recipe
    (30, 1, 1024, 1024, 30, 600),
    (50, 1, 1024, 1024, 50, 600),  # the default request: the reference
    (50, 1, 832, 1216, 48.2421875, 600),  # a portrait size of about 1 MP
    (50, 2, 1024, 1024, 100, 1200),
    (75, 2, 1024, 1024, 150, 1800),
    (150, 1, 1024, 1024, 150, 1800),  # the most steps
    (50, 4, 1024, 1024, 200, 2400),  # the most pictures at the native size
    (50, 1, 2048, 2048, 200, 2400),  # the largest picture
    (12, 4, 2048, 1024, 96, 1152),
]


@pytest.mark.parametrize(("steps", "pictures", "width", "height", "cost", "deadline"), TABLE)
def test_the_cost_table(
    steps: int, pictures: int, width: int, height: int, cost: float, deadline: float
) -> None:
    assert request_cost(steps, pictures, width, height) == pytest.approx(cost)
    job = spec(num_inference_steps=steps, num_images=pictures, width=width, height=height)
    assert batch_cost(job) == pytest.approx(cost)
    assert deadline_s(cost, TIMEOUT_S) == pytest.approx(deadline)
    assert check_cost(job, MAX_COST) == pytest.approx(cost)


def test_the_deadline_grows_in_proportion_above_the_reference() -> None:
    assert REFERENCE_COST == 50
    assert deadline_s(MAX_COST, 60.0) == 240.0
    assert deadline_s(0.0, 60.0) == 60.0
    # Never shorter than GENERATION_TIMEOUT_S, and twice the cost above the
    # reference is twice the time.
    assert deadline_s(2 * 120, 10.0) == 2 * deadline_s(120, 10.0)


@pytest.mark.parametrize(
    ("steps", "pictures", "width", "height"),
    [(150, 4, 1024, 1024), (51, 4, 1024, 1024), (150, 1, 2048, 2048), (101, 2, 1024, 1024)],
)
def test_a_request_over_the_budget_is_refused_naming_the_cap_and_its_cost(
    steps: int, pictures: int, width: int, height: int
) -> None:
    job = spec(num_inference_steps=steps, num_images=pictures, width=width, height=height)
    with pytest.raises(InvalidRequest, match="MAX_REQUEST_COST") as caught:
        check_cost(job, MAX_COST)
    cost = request_cost(steps, pictures, width, height)
    assert f"costs {cost:g}" in caught.value.message
    assert "the limit is 200" in caught.value.message


def test_the_budget_is_a_setting() -> None:
    job = spec(num_inference_steps=10, num_images=1, width=1024, height=1024)
    assert check_cost(job, 10.0) == 10.0
    with pytest.raises(InvalidRequest, match=r"the limit is 9\.5"):
        check_cost(job, 9.5)


def test_prompt_tokens_past_the_limit_are_refused() -> None:
    check_prompt_tokens(600, 600)
    with pytest.raises(InvalidRequest, match=r"601 tokens.*600 \(MAX_PROMPT_TOKENS\)"):
        check_prompt_tokens(601, 600)


@pytest.mark.parametrize(("group", "ok"), [(None, True), ("u1", True), ("u2", False), ("", False)])
def test_the_fair_queue_group_must_be_the_user(group: str | None, ok: bool) -> None:
    if ok:
        check_group(group, "u1")
    else:
        with pytest.raises(InvalidRequest, match="MessageGroupId"):
            check_group(group, "u1")
