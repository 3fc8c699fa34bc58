"""Contract section 1: every rule of the request message."""

from __future__ import annotations

import json
from typing import Any

import pytest

from consumer.contract.request import (
    MAX_BODY_BYTES,
    effective_spec,
    identifying_fields,
    parse_request,
)
from consumer.errors import ErrorCode, InvalidRequest
from consumer.settings import GenerationDefaults
from pipeline.api.spec import JobKind

DEFAULTS = GenerationDefaults()


def memory(**fields: Any) -> dict[str, Any]:
    return {
        "job_id": "m-001",
        "kind": "memory",
        "user_id": "user123",
        "prompt": "a beach",
        **fields,
    }


def subject(**fields: Any) -> dict[str, Any]:
    return {"job_id": "s-001", "kind": "subject", "user_id": "user123", **fields}


def parse(body: dict[str, Any] | bytes) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_request(raw, DEFAULTS)


def rejected(body: dict[str, Any] | bytes) -> str:
    with pytest.raises(InvalidRequest) as caught:
        parse(body)
    assert caught.value.code is ErrorCode.INVALID_REQUEST
    return caught.value.message


def test_minimal_memory_and_subject_requests_parse() -> None:
    request = parse(memory())
    assert request.kind is JobKind.MEMORY
    assert request.prompt == "a beach"
    assert parse(subject()).prompt is None


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe{}", "UTF-8"),
        (b"[1, 2]", "JSON object"),
        (b'"a string"', "JSON object"),
        (b"null", "JSON object"),
        (b"1" * 5000, "not JSON"),
        (b"[" * 100_000, "not JSON"),
    ],
)
def test_bodies_that_are_not_json_objects(body: bytes, needle: str) -> None:
    assert needle in rejected(body)


def test_body_size_limit_is_256_kib() -> None:
    body = json.dumps(memory()).encode()
    at_limit = body + b" " * (MAX_BODY_BYTES - len(body))
    assert parse(at_limit).job_id == "m-001"
    assert "limit" in rejected(at_limit + b" ")


@pytest.mark.parametrize("version", [0, 2, "1", 1.0, True, None])
def test_unsupported_versions(version: object) -> None:
    assert "version" in rejected(memory(version=version))


def test_version_one_is_the_default_and_accepted() -> None:
    assert parse(memory(version=1)).version == 1


def test_unknown_fields_are_rejected() -> None:
    assert "surprise" in rejected(memory(surprise=True))


@pytest.mark.parametrize("missing", ["job_id", "kind", "user_id"])
def test_required_fields(missing: str) -> None:
    body = memory()
    del body[missing]
    assert missing in rejected(body)


def test_memory_needs_a_prompt_and_subject_does_not() -> None:
    assert "prompt" in rejected(memory(prompt=None))
    assert "prompt" in rejected(memory(prompt=""))
    assert parse(subject(prompt="smiling")).prompt == "smiling"


@pytest.mark.parametrize("kind", ["Memory", "portrait", "", 1, None])
def test_kind_must_be_memory_or_subject(kind: object) -> None:
    assert "kind" in rejected(memory(kind=kind))


@pytest.mark.parametrize("field", ["job_id", "user_id"])
@pytest.mark.parametrize(
    "value",
    ["", "x" * 129, "../etc", "a/b", "a.b", "a b", "ü", "a\nb", 5, None, ["a"]],
)
def test_identifiers_are_bounded_and_plain(field: str, value: object) -> None:
    assert field in rejected(memory(**{field: value}))


@pytest.mark.parametrize("field", ["job_id", "user_id"])
def test_identifier_limits_accepted(field: str) -> None:
    assert getattr(parse(memory(**{field: "a" * 128})), field) == "a" * 128
    assert getattr(parse(memory(**{field: "A-z_9"})), field) == "A-z_9"


@pytest.mark.parametrize("field", ["prompt", "negative_prompt", "style_prompt"])
def test_text_fields_at_most_2000_characters(field: str) -> None:
    assert getattr(parse(memory(**{field: "é" * 2000})), field) == "é" * 2000
    assert field in rejected(memory(**{field: "é" * 2001}))
    assert field in rejected(memory(**{field: 7}))


@pytest.mark.parametrize(
    ("field", "good", "bad"),
    [
        ("num_inference_steps", [1, 150], [0, 151, 2.5, "30", True, -1]),
        ("ip_adapter_scale", [0, 0.0, 0.5, 1, 1.0], [-0.01, 1.01, "0.3", True]),
        ("guidance_scale", [0, 20, 7.5], [-1, 20.5, "5", False]),
        ("seed", [0, 2**32 - 1], [-1, 2**32, 1.5, "1"]),
        ("width", [64, 1024, 2048], [0, 32, 100, 2112, 4096, 64.0, "64"]),
        ("height", [64, 1024, 2048], [0, 32, 100, 2112, 4096, 64.0, "64"]),
    ],
)
def test_numeric_bounds_and_types(field: str, good: list[object], bad: list[object]) -> None:
    for value in good:
        assert getattr(parse(memory(**{field: value})), field) == value
    for value in bad:
        assert field in rejected(memory(**{field: value})), value


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("field", ["ip_adapter_scale", "guidance_scale"])
def test_floats_must_be_finite(field: str, text: str) -> None:
    body = json.dumps(memory()).replace("}", f', "{field}": {text}}}').encode()
    assert field in rejected(body)


def test_image_key_must_sit_under_the_kinds_prefix() -> None:
    assert parse(memory(image_key="avatars/user123/me.png")).image_key == "avatars/user123/me.png"
    assert parse(subject(image_key="subjects/user123.jpg")).image_key == "subjects/user123.jpg"
    assert "avatars/user123" in rejected(memory(image_key="subjects/user123.png"))
    assert "subjects/user123" in rejected(subject(image_key="avatars/user123.png"))
    assert "subjects/user123" in rejected(subject(image_key="generated/user123.png"))


@pytest.mark.parametrize(
    "key", ["avatars/u1.png", "avatars/u1/2024.jpg", "avatars/u1.", "avatars/u1/a/b-c_d.e.webp"]
)
def test_image_key_in_the_users_own_namespace_passes(key: str) -> None:
    body = json.dumps(memory(user_id="u1", image_key=key)).encode()
    assert parse_request(body, DEFAULTS).image_key == key


@pytest.mark.parametrize(
    "key",
    [
        "avatars/u1x.png",  # another user whose id starts with u1
        "avatars/u1-2/me.png",
        "avatars/u2.png",
        "avatars/u2/me.png",
        "avatars/u1",
        "avatars/u1/",
        "avatars/u1//me.png",
        "avatars/u1/./me.png",
        "avatars/u1/../u2.png",
        "avatars/u1/..",
        "/avatars/u1.png",
        "avatars/U1.png",
        "avatars/u1%2e%2e/u2.png",
        "avatars/u1/%2e%2e/u2.png",
        "avatars/u1%2f..%2fu2.png",
        "avatars/u1%2Fme.png",
        "avatars/u1/\uff0e\uff0e/u2.png",  # fullwidth full stops
        "avatars/u1\uff0fme.png",  # fullwidth solidus
        "avatars/u1\u2215me.png",  # division slash
        "avatars/u1\u2044me.png",  # fraction slash
        "avatars/u1\u2024png",  # one-dot leader
        "avatars/\u04301.png",  # Cyrillic a for nothing: no look-alike passes
        "avatars/u\u0661.png",  # Arabic-Indic digit one
        "avatars\uff0fu1.png",
        "avatars/u1\\..\\u2.png",
        "avatars/u1.png\u0000",
        "avatars/u1.png\n",
        "avatars/u1 .png",
    ],
)
def test_image_key_outside_the_users_namespace_is_invalid_request(key: str) -> None:
    body = json.dumps(memory(user_id="u1", image_key=key)).encode()
    with pytest.raises(InvalidRequest) as caught:
        parse_request(body, DEFAULTS)
    assert caught.value.code is ErrorCode.INVALID_REQUEST
    assert "image_key" in caught.value.message


@pytest.mark.parametrize(
    "key", ["avatars/../generated/x.png", "avatars/..", "avatars/a/../../b.png", "avatars/..%2f"]
)
def test_image_key_path_traversal(key: str) -> None:
    assert "image_key" in rejected(memory(image_key=key))


def test_image_key_prefix_follows_settings() -> None:
    custom = GenerationDefaults(s3_avatar_prefix="in/faces/")
    body = json.dumps(memory(image_key="in/faces/user123.png")).encode()
    assert parse_request(body, custom).image_key == "in/faces/user123.png"
    with pytest.raises(InvalidRequest):
        parse_request(json.dumps(memory(image_key="avatars/user123.png")).encode(), custom)


def test_effective_spec_fills_defaults_per_kind() -> None:
    spec = effective_spec(parse(memory()), DEFAULTS, (1024, 768), lambda: 42)
    assert spec.seed == 42
    assert (spec.width, spec.height) == (1024, 768)
    assert spec.num_inference_steps == 50
    assert spec.ip_adapter_scale == pytest.approx(0.33)
    assert spec.guidance_scale == pytest.approx(5.0)
    assert spec.negative_prompt == "error, glitch, mistake"
    assert spec.style_prompt == DEFAULTS.default_memory_style_prompt
    subject_spec = effective_spec(parse(subject()), DEFAULTS, (1024, 1024), lambda: 1)
    assert subject_spec.style_prompt == DEFAULTS.default_subject_style_prompt
    assert subject_spec.prompt == ""


def test_effective_spec_keeps_given_values() -> None:
    given = memory(
        num_inference_steps=7,
        ip_adapter_scale=0.0,
        guidance_scale=0.0,
        negative_prompt="",
        style_prompt="ink",
        seed=0,
        width=64,
        height=128,
    )
    spec = effective_spec(parse(given), DEFAULTS, (1024, 1024), lambda: 99)
    assert (spec.num_inference_steps, spec.ip_adapter_scale, spec.guidance_scale) == (7, 0.0, 0.0)
    assert (spec.negative_prompt, spec.style_prompt, spec.seed) == ("", "ink", 0)
    assert (spec.width, spec.height) == (64, 128)


def test_random_seeds_are_in_range_and_vary() -> None:
    seeds = {effective_spec(parse(memory()), DEFAULTS, (64, 64)).seed for _ in range(20)}
    assert len(seeds) > 1
    assert all(0 <= s <= 2**32 - 1 for s in seeds)


def test_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEFAULT_NUM_INFERENCE_STEPS", "30")
    monkeypatch.setenv("DEFAULT_SUBJECT_STYLE_PROMPT", "oil painting")
    defaults = GenerationDefaults()
    spec = effective_spec(parse(subject()), defaults, (64, 64), lambda: 1)
    assert (spec.num_inference_steps, spec.style_prompt) == (30, "oil painting")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (json.dumps(memory(width=3)).encode(), ("m-001", "memory", "user123")),
        (
            json.dumps({"job_id": "../x", "kind": "art", "user_id": "ok"}).encode(),
            (None, None, "ok"),
        ),
        (json.dumps({"job_id": 5, "kind": ["memory"]}).encode(), (None, None, None)),
        (b"not json", (None, None, None)),
        (b"[]", (None, None, None)),
    ],
)
def test_identifying_fields_keep_only_valid_values(
    body: bytes, expected: tuple[str | None, str | None, str | None]
) -> None:
    fields = identifying_fields(body)
    assert (fields.job_id, fields.kind, fields.user_id) == expected


def test_the_digest_names_the_fields_not_the_bytes() -> None:
    from consumer.contract.request import request_digest

    defaults = GenerationDefaults()
    body = {"job_id": "j1", "kind": "memory", "user_id": "u1", "prompt": "a beach", "seed": 3}
    spaced = json.dumps(dict(reversed(body.items())), indent=2).encode()
    same = request_digest(parse_request(json.dumps(body).encode(), defaults))
    assert request_digest(parse_request(spaced, defaults)) == same
    other = {**body, "prompt": "a mountain"}
    assert request_digest(parse_request(json.dumps(other).encode(), defaults)) != same


def test_num_images_is_one_to_four() -> None:
    defaults = GenerationDefaults()
    base = {"job_id": "j1", "kind": "memory", "user_id": "u1", "prompt": "p"}
    for good in (1, 4):
        assert parse_request(json.dumps({**base, "num_images": good}).encode(), defaults)
    for bad in (0, 5, 2.0, "2"):
        with pytest.raises(InvalidRequest, match="num_images"):
            parse_request(json.dumps({**base, "num_images": bad}).encode(), defaults)
