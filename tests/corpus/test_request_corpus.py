"""Every request of the bad-input corpus through parsing and signature checking."""

from __future__ import annotations

import re

import pytest

from consumer.classify import classify
from consumer.contract.request import effective_spec, identifying_fields, parse_request
from consumer.contract.signing import verify
from consumer.errors import ErrorCode, InvalidRequest, Unauthorized
from consumer.settings import GenerationDefaults
from tests.corpus.corpus import AUTH_TOKEN, RequestCase, request_cases, signature_for

DEFAULTS = GenerationDefaults()
CASES = request_cases()
# The message goes into the failed event (SNS takes at most 256 KiB) and the
# logs: whatever the body, what is reported stays short. (InvalidRequest's own
# message is not bounded: it quotes a bad version or field name in full.)
MAX_MESSAGE_CHARS = 500


def ids(case: RequestCase) -> str:
    return case.name


def outcome(case: RequestCase) -> str:
    """What parsing and the signature check make of a case: 'ok' or an error code."""
    try:
        verify(case.body, signature_for(case), AUTH_TOKEN)
        parse_request(case.body, DEFAULTS)
    except (InvalidRequest, Unauthorized) as error:
        return error.code.value if error.message else "failure without a message"
    return "ok"


def test_the_corpus_is_large_and_well_formed() -> None:
    names = [case.name for case in CASES]
    assert len(names) == len(set(names))
    assert sum(case.expect != "ok" for case in CASES) >= 40
    codes = {code.value for code in ErrorCode}
    for case in CASES:
        assert case.expect in codes | {"ok"}, case.name
        assert case.expect_live in codes | {"succeeded"}, case.name


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_each_body_has_its_expected_outcome(case: RequestCase) -> None:
    assert outcome(case) == case.expect, case.why


@pytest.mark.parametrize("case", [c for c in CASES if c.expect == "ok"], ids=ids)
def test_accepted_bodies_yield_a_spec_and_agree_with_identifying_fields(
    case: RequestCase,
) -> None:
    request = parse_request(case.body, DEFAULTS)
    if case.expect_live == "invalid_request":
        # Valid field by field, refused as a whole once its cost is known.
        with pytest.raises(InvalidRequest, match="MAX_REQUEST_COST"):
            effective_spec(request, DEFAULTS, (1024, 1024), draw_seed=lambda: 7)
        return
    spec = effective_spec(request, DEFAULTS, (1024, 1024), draw_seed=lambda: 7)
    assert spec.width % 64 == 0
    assert spec.height % 64 == 0
    # The failed-event path reads ids with a different parser: both must agree
    # (a body with duplicate keys must not name two different jobs).
    fields = identifying_fields(case.body)
    assert (fields.job_id, fields.kind, fields.user_id) == (
        request.job_id,
        request.kind.value,
        request.user_id,
    )
    if case.expect_job_id is not None:
        assert request.job_id == case.expect_job_id


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_identifying_fields_never_raise_and_keep_only_valid_ids(case: RequestCase) -> None:
    fields = identifying_fields(case.body)
    for value in (fields.job_id, fields.user_id):
        assert value is None or re.fullmatch(r"[A-Za-z0-9_-]{1,128}", value)
    assert fields.kind in {None, "memory", "subject"}


@pytest.mark.parametrize("case", [c for c in CASES if c.expect == "invalid_request"], ids=ids)
def test_error_messages_reported_stay_short(case: RequestCase) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_request(case.body, DEFAULTS)
    verdict = classify(caught.value)
    assert verdict.code is ErrorCode.INVALID_REQUEST
    assert 0 < len(verdict.message) <= MAX_MESSAGE_CHARS
