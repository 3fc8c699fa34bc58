"""Contract section 2 keys and the request signature."""

from __future__ import annotations

import itertools
import json

import pytest

from consumer.contract.keys import earlier_output_key, input_candidates, output_key, s3_uri
from consumer.contract.request import parse_request
from consumer.contract.signing import sign, verify
from consumer.errors import ErrorCode, Unauthorized
from consumer.settings import GenerationDefaults
from pipeline.api.spec import JobKind

DEFAULTS = GenerationDefaults()


def request(**fields: object):  # type: ignore[no-untyped-def]
    body = {"job_id": "j1", "kind": "memory", "user_id": "u1", "prompt": "p", **fields}
    return parse_request(json.dumps(body).encode(), DEFAULTS)


def test_memory_input_candidates_in_order() -> None:
    assert input_candidates(request(), DEFAULTS) == [
        "avatars/u1.png",
        "avatars/u1.jpg",
        "avatars/u1.jpeg",
        "avatars/u1.webp",
    ]


def test_subject_input_candidates_use_the_subject_prefix() -> None:
    keys = input_candidates(request(kind="subject"), DEFAULTS)
    assert keys[0] == "subjects/u1.png"
    assert all(k.startswith("subjects/u1.") for k in keys)


def test_image_key_replaces_the_candidates() -> None:
    assert input_candidates(request(image_key="avatars/u1/y.webp"), DEFAULTS) == [
        "avatars/u1/y.webp"
    ]


def test_output_key_depends_only_on_the_request() -> None:
    key = output_key(DEFAULTS, "user123", JobKind.MEMORY, "m-001")
    assert key == "generated/user123/memory_m-001.png"
    assert output_key(DEFAULTS, "user123", JobKind.SUBJECT, "m-001") != key
    custom = GenerationDefaults(s3_generated_prefix="out/")
    assert output_key(custom, "u", JobKind.SUBJECT, "j") == "out/u/subject_j.png"


def test_output_keys_are_unambiguous_for_every_job_id_and_picture() -> None:
    # Every job id of up to four characters from an alphabet that has the
    # separators of the earlier scheme, with pictures 0 to 4: no two share a key.
    ids = ["".join(chars) for n in range(1, 5) for chars in itertools.product("a1_-", repeat=n)]
    pairs = [(job_id, index) for job_id in ids for index in range(5)]
    keys = {output_key(DEFAULTS, "u", JobKind.MEMORY, job_id, i) for job_id, i in pairs}
    assert len(keys) == len(pairs)
    assert output_key(DEFAULTS, "u", JobKind.MEMORY, "a", 1) == "generated/u/memory_a.1.png"
    assert output_key(DEFAULTS, "u", JobKind.MEMORY, "a_1", 0) == "generated/u/memory_a_1.png"


def test_the_earlier_keys_were_ambiguous_and_are_kept_for_finding_old_pictures() -> None:
    earlier = earlier_output_key(DEFAULTS, "u", JobKind.MEMORY, "a", 1)
    assert earlier == "generated/u/memory_a_1.png"
    assert earlier == output_key(DEFAULTS, "u", JobKind.MEMORY, "a_1", 0)
    with pytest.raises(ValueError, match="picture 0"):
        earlier_output_key(DEFAULTS, "u", JobKind.MEMORY, "a", 0)


def test_s3_uri() -> None:
    assert s3_uri("auto-bio-illustrations", "generated/a.png") == (
        "s3://auto-bio-illustrations/generated/a.png"
    )


def test_signature_is_lowercase_hex_hmac_sha256() -> None:
    # RFC 4231 test case 2.
    digest = sign(b"what do ya want for nothing?", "Jefe")
    assert digest == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def test_verify_accepts_the_right_signature() -> None:
    verify(b"body", sign(b"body", "token"), "token")


@pytest.mark.parametrize(
    "signature",
    [None, "", "00" * 32, sign(b"other", "token"), sign(b"body", "wrong"), "zz", "é"],
)
def test_verify_rejects_missing_or_wrong_signatures(signature: str | None) -> None:
    with pytest.raises(Unauthorized) as caught:
        verify(b"body", signature, "token")
    assert caught.value.code is ErrorCode.UNAUTHORIZED


def test_uppercase_hex_is_not_the_contract() -> None:
    with pytest.raises(Unauthorized):
        verify(b"body", sign(b"body", "token").upper(), "token")


def test_a_retiring_token_is_accepted_during_rotation() -> None:
    verify(b"body", sign(b"body", "old"), "new", "old")
    verify(b"body", sign(b"body", "new"), "new", "old")
    with pytest.raises(Unauthorized):
        verify(b"body", sign(b"body", "older"), "new", "old")


def test_an_empty_token_never_verifies() -> None:
    with pytest.raises(Unauthorized):
        verify(b"body", sign(b"body", ""), "token", "")
