"""Property-based tests of request parsing: only classified failures ever escape."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.contract.request import MAX_SEED, Request, identifying_fields, parse_request
from consumer.errors import InvalidRequest
from consumer.settings import GenerationDefaults

DEFAULTS = GenerationDefaults()
FIELDS = tuple(Request.model_fields)
# Modest counts: the whole file runs in a few seconds on a 2-core CI runner.
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

identifiers = st.from_regex(r"\A[A-Za-z0-9_-]{1,128}\Z")
texts = st.text(max_size=2000)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)


def parses_or_is_classified(body: bytes) -> Request | None:
    """Parse `body`; ``None`` for a classified rejection. Anything else propagates."""
    try:
        return parse_request(body, DEFAULTS)
    except InvalidRequest as error:
        if not error.message:
            raise AssertionError("a rejection must say why") from error
        return None


@FAST
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_never_raise_anything_but_invalid_request(body: bytes) -> None:
    parses_or_is_classified(body)
    identifying_fields(body)


@FAST
@given(json_values)
def test_arbitrary_json_values_never_raise_anything_but_invalid_request(value: Any) -> None:
    body = json.dumps(value).encode()
    assert parses_or_is_classified(body) is None or isinstance(value, dict)
    identifying_fields(body)


@FAST
@given(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=len(FIELDS)))
def test_known_fields_with_arbitrary_values_are_parsed_or_classified(
    body: dict[str, Any],
) -> None:
    parsed = parses_or_is_classified(json.dumps(body).encode())
    if parsed is not None:
        # Whatever was accepted obeys the contract's rules.
        assert parsed.version == 1
        assert parsed.kind.value == body["kind"]
        assert parsed.job_id == body["job_id"]


key_segments = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-",
    min_size=1,
    max_size=40,
).filter(lambda segment: segment not in {".", ".."})


@st.composite
def valid_requests(draw: st.DrawFn) -> dict[str, Any]:
    """A request the contract accepts, with any subset of the optional fields."""
    kind = draw(st.sampled_from(["memory", "subject"]))
    body: dict[str, Any] = {"job_id": draw(identifiers), "kind": kind, "user_id": draw(identifiers)}
    if kind == "memory":
        body["prompt"] = draw(st.text(min_size=1, max_size=2000))
    optional: dict[str, st.SearchStrategy[Any]] = {
        "version": st.just(1),
        "num_inference_steps": st.integers(1, 150),
        "ip_adapter_scale": st.floats(0.0, 1.0),
        "guidance_scale": st.floats(0.0, 20.0),
        "seed": st.integers(0, MAX_SEED),
        "width": st.integers(1, 32).map(lambda n: n * 64),
        "height": st.integers(1, 32).map(lambda n: n * 64),
        "negative_prompt": texts,
        "style_prompt": texts,
        # Within the user's own namespace (contract 9.1): the kind's prefix,
        # the user id, then "." or "/" and segments that are neither "." nor "..".
        "image_key": st.tuples(
            st.sampled_from([".", "/"]),
            st.lists(key_segments, min_size=1, max_size=4).map("/".join),
        ).map(
            lambda parts: (
                ("avatars/" if kind == "memory" else "subjects/")
                + body["user_id"]
                + parts[0]
                + parts[1]
            )
        ),
    }
    if kind == "subject":
        optional["prompt"] = texts
    for name in draw(st.sets(st.sampled_from(sorted(optional)))):
        body[name] = draw(optional[name])
    return body


@FAST
@given(valid_requests(), st.booleans())
def test_valid_requests_round_trip(body: dict[str, Any], ascii_only: bool) -> None:
    raw = json.dumps(body, ensure_ascii=ascii_only).encode()
    request = parse_request(raw, DEFAULTS)
    for name, value in body.items():
        assert getattr(request, name) == value, name
    again = parse_request(request.model_dump_json(exclude_none=True).encode(), DEFAULTS)
    assert again == request
    fields = identifying_fields(raw)
    assert (fields.job_id, fields.kind, fields.user_id) == (
        body["job_id"],
        body["kind"],
        body["user_id"],
    )


def finite(
    min_value: float | None = None, max_value: float | None = None
) -> st.SearchStrategy[float]:
    # NaN and Infinity are not JSON; the corpus covers those literals.
    return st.floats(min_value, max_value, allow_nan=False, allow_infinity=False)


OUT_OF_BOUNDS: dict[str, st.SearchStrategy[Any]] = {
    "num_inference_steps": st.integers(max_value=0) | st.integers(min_value=151),
    "ip_adapter_scale": finite(max_value=-1e-9) | finite(min_value=1.0 + 1e-9),
    "guidance_scale": finite(max_value=-1e-9) | finite(min_value=20.0 + 1e-9),
    "seed": st.integers(max_value=-1) | st.integers(min_value=MAX_SEED + 1, max_value=2**80),
    "width": st.integers(-4096, 8192).filter(lambda n: n % 64 or not 64 <= n <= 2048),
    "height": st.integers(-4096, 8192).filter(lambda n: n % 64 or not 64 <= n <= 2048),
    "job_id": st.text(max_size=200).filter(lambda s: not _is_identifier(s)),
    "user_id": st.text(max_size=200).filter(lambda s: not _is_identifier(s)),
    "kind": st.text(max_size=20).filter(lambda s: s not in {"memory", "subject"}),
    "version": json_scalars.filter(lambda v: type(v) is not int or v != 1),
    "prompt": st.text(min_size=2001, max_size=2100),
}


def _is_identifier(value: str) -> bool:
    return 0 < len(value) <= 128 and all(c.isascii() and (c.isalnum() or c in "-_") for c in value)


@FAST
@given(valid_requests(), st.data())
def test_one_field_out_of_bounds_is_always_rejected(
    body: dict[str, Any], data: st.DataObject
) -> None:
    name = data.draw(st.sampled_from(sorted(OUT_OF_BOUNDS)))
    body[name] = data.draw(OUT_OF_BOUNDS[name])
    assert parses_or_is_classified(json.dumps(body).encode()) is None


@FAST
@given(valid_requests(), st.text(min_size=1, max_size=30).filter(lambda k: k not in FIELDS))
def test_unknown_fields_are_always_rejected(body: dict[str, Any], extra: str) -> None:
    body[extra] = 1
    assert parses_or_is_classified(json.dumps(body).encode()) is None
