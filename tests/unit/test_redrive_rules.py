"""Which dead-lettered requests a redrive moves: the rules as a table."""

from __future__ import annotations

import pytest

from consumer.cli.redrive_rules import CODES, CodeRule, left_summary
from consumer.errors import ErrorCode

STANDARD_LEFT = {
    "invalid_request",
    "invalid_input",
    "too_large",
    "crashed_worker",
    "content_filtered",
}


def test_the_standard_rule_leaves_exactly_the_codes_that_cannot_succeed_unchanged() -> None:
    rule = CodeRule.standard()
    assert {code for code in CODES if not rule.moves(code)} == STANDARD_LEFT
    assert rule.moves(None)  # moved by SQS itself, no code: a crash, worth a retry
    assert not rule.moves_all


@pytest.mark.parametrize(
    ("everything", "codes", "except_codes", "moved"),
    [
        (True, None, None, set(CODES)),
        (False, ["too_large"], None, {"too_large"}),
        (False, ["too_large", "none"], None, {"too_large", "none"}),
        (False, None, ["invalid_request"], set(CODES) - {"invalid_request"}),
        (False, None, None, set(CODES) - STANDARD_LEFT),
    ],
)
def test_the_command_lines_rules(
    everything: bool, codes: list[str] | None, except_codes: list[str] | None, moved: set[str]
) -> None:
    rule = CodeRule.from_options(everything=everything, codes=codes, except_codes=except_codes)
    assert {code for code in CODES if rule.moves(None if code == "none" else code)} == moved
    assert rule.moves_all is (moved == set(CODES))


def test_every_error_code_can_be_named() -> None:
    assert set(CODES) == {code.value for code in ErrorCode} | {"none"}


def test_the_summary_puts_the_largest_first() -> None:
    assert left_summary({"too_large": 1, "invalid_input": 3, "content_filtered": 1}) == (
        "invalid_input 3, content_filtered 1, too_large 1"
    )
