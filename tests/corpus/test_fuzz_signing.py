"""Property-based tests of request signatures: sign() verifies, any mutation does not."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.contract.signing import sign, verify
from consumer.errors import Unauthorized

FAST = settings(max_examples=200, deadline=None)
bodies = st.binary(max_size=2048)
tokens = st.text(min_size=1, max_size=64)


@FAST
@given(bodies, tokens)
def test_a_signature_made_by_sign_verifies(body: bytes, token: str) -> None:
    signature = sign(body, token)
    assert len(signature) == 64
    assert signature == signature.lower()
    verify(body, signature, token)


@FAST
@given(bodies.filter(bool), tokens, st.data())
def test_any_change_to_the_body_is_rejected(body: bytes, token: str, data: st.DataObject) -> None:
    signature = sign(body, token)
    at = data.draw(st.integers(0, len(body) - 1))
    bit = data.draw(st.integers(0, 7))
    mutated = bytearray(body)
    mutated[at] ^= 1 << bit
    with pytest.raises(Unauthorized):
        verify(bytes(mutated), signature, token)


@FAST
@given(bodies, bodies, tokens)
def test_appending_or_truncating_the_body_is_rejected(body: bytes, tail: bytes, token: str) -> None:
    signature = sign(body, token)
    if tail:
        with pytest.raises(Unauthorized):
            verify(body + tail, signature, token)
    if body:
        with pytest.raises(Unauthorized):
            verify(body[:-1], signature, token)


@FAST
@given(bodies, tokens, st.data())
def test_any_change_to_the_signature_is_rejected(
    body: bytes, token: str, data: st.DataObject
) -> None:
    signature = sign(body, token)
    at = data.draw(st.integers(0, len(signature) - 1))
    replacement = data.draw(st.characters().filter(lambda c: c != signature[at]))
    with pytest.raises(Unauthorized):
        verify(body, signature[:at] + replacement + signature[at + 1 :], token)


@FAST
@given(bodies, tokens, tokens.filter(bool))
def test_another_key_is_rejected(body: bytes, token: str, other: str) -> None:
    if other == token:
        other += "x"
    with pytest.raises(Unauthorized):
        verify(body, sign(body, other), token)


@FAST
@given(bodies, tokens, st.none() | st.text(max_size=200))
def test_arbitrary_signatures_are_only_ever_unauthorized(
    body: bytes, token: str, signature: str | None
) -> None:
    if signature == sign(body, token):
        return
    with pytest.raises(Unauthorized):
        verify(body, signature, token)


@FAST
@given(bodies, tokens)
def test_surrogates_in_a_signature_attribute_are_unauthorized_not_a_crash(
    body: bytes, token: str
) -> None:
    # A JSON-decoded attribute can hold a lone surrogate, which UTF-8 cannot encode.
    with pytest.raises(Unauthorized):
        verify(body, sign(body, token)[:-1] + "\ud800", token)
