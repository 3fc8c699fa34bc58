"""The style catalog and a request's style: parsing, validation, the spec it gives."""

from __future__ import annotations

import json
from types import MappingProxyType

import pytest

from consumer.contract.catalog import (
    MAX_NAMES_LISTED,
    CatalogError,
    StyleBook,
    StyleCatalog,
    StyleLora,
    lora_source,
    parse_catalog,
)
from consumer.contract.event import Parameters
from consumer.contract.request import effective_spec, parse_request
from consumer.errors import InvalidRequest
from consumer.settings import GenerationDefaults
from pipeline.api.lora_files import LoraFacts
from pipeline.api.spec import GenerationSpec

YAML = b"""
default: pencil
styles:
  pencil:
    style_prompt: "professional pencil sketch, monochrome"
    negative_prompt: "color, photo"
    lora: styles/pencil.safetensors
    lora_scale: 0.8
    defaults: {num_inference_steps: 30, ip_adapter_scale: 0.4, width: 256, height: 192}
  plain:
    style_prompt: watercolour
"""
NATIVE = (1024, 1024)
FACTS = LoraFacts(4, frozenset({"to_q"}), 1, 0, (), 100, "F16")
PENCIL = StyleLora(
    "styles/pencil.safetensors", "/cache/pencil.safetensors", "0123456789abcdef", FACTS
)


def book(data: bytes = YAML) -> StyleBook:
    catalog = parse_catalog(data, "catalog.yaml")
    loras = {"pencil": PENCIL} if "pencil" in catalog.styles else {}
    return StyleBook(catalog, MappingProxyType(loras), "catalog.yaml")


def request(**fields: object) -> bytes:
    body = {"job_id": "j1", "kind": "memory", "user_id": "u1", "prompt": "a beach", **fields}
    return json.dumps(body).encode()


def spec_of(body: bytes, styles: StyleBook | None = None) -> GenerationSpec:
    defaults = GenerationDefaults()
    return effective_spec(parse_request(body, defaults), defaults, NATIVE, lambda: 7, styles=styles)


def test_yaml_and_json_catalogs_of_the_same_structure_are_the_same() -> None:
    from_yaml = parse_catalog(YAML, "styles.yaml")
    import yaml

    as_json = json.dumps(yaml.safe_load(YAML)).encode()
    assert parse_catalog(as_json, "styles.json") == from_yaml
    assert from_yaml.default == "pencil"
    assert from_yaml.styles["pencil"].lora_scale == 0.8
    assert from_yaml.styles["plain"].lora is None
    assert from_yaml.styles["plain"].lora_scale == 1.0


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"styles: [", "not YAML"),
        (b"[1, 2]", "must be a map"),
        (b"styles: {}", "styles"),
        (b"default: x\nstyles: {a: {}}", "default 'x' is not one of the styles"),
        (b"styles: {a: {colour: red}}", "styles.a.colour"),
        (b"styles: {a: {lora: a.bin}}", "must name a .safetensors file"),
        (b"styles: {a: {lora_scale: 5}}", "lora_scale"),
        (b"styles: {a: {defaults: {width: 100}}}", "width: Input should be a multiple of 64"),
        (b"styles: {a: {defaults: {num_inference_steps: 0}}}", "num_inference_steps"),
        (b"styles: {a: {defaults: {num_inference_steps: '3'}}}", "num_inference_steps"),
        (b"styles: {a: {defaults: {ip_adapter_scale: 1.5}}}", "ip_adapter_scale"),
        (b"styles: {a: {defaults: {seed: 3}}}", "seed is not a default a style may set"),
        (b"styles: {'../x': {}}", "String should match pattern"),
    ],
)
def test_a_bad_catalog_is_refused_saying_where(data: bytes, reason: str) -> None:
    with pytest.raises(CatalogError, match=reason.replace(".", r"\.").replace("(", r"\(")):
        parse_catalog(data, "styles.yaml")


def test_a_catalog_over_its_size_limit_is_refused_unread() -> None:
    with pytest.raises(CatalogError, match="bytes; a catalog is at most"):
        parse_catalog(b"#" * (1024 * 1024 + 1), "styles.yaml")


@pytest.mark.parametrize(
    ("catalog", "lora", "expected"),
    [
        ("s3://b/models/styles.yaml", "loras/a.safetensors", "s3://b/models/loras/a.safetensors"),
        ("s3://b/models/styles.yaml", "s3://c/x.safetensors", "s3://c/x.safetensors"),
        ("/etc/illustrator/styles.yaml", "a.safetensors", "/etc/illustrator/a.safetensors"),
        ("/etc/styles.yaml", "/srv/a.safetensors", "/srv/a.safetensors"),
        ("styles.yaml", "a.safetensors", "a.safetensors"),
    ],
)
def test_a_relative_lora_lies_beside_its_catalog(catalog: str, lora: str, expected: str) -> None:
    assert lora_source(catalog, lora) == expected


def test_the_style_lays_its_defaults_under_the_requests_own_fields() -> None:
    spec = spec_of(request(style="pencil"), book())
    assert (spec.style, spec.style_strength, spec.style_digest) == ("pencil", 1.0, PENCIL.digest)
    assert spec.style_lora == PENCIL.path
    assert spec.style_lora_scale == 0.8
    assert spec.style_prompt == "professional pencil sketch, monochrome"
    assert spec.negative_prompt == "color, photo"
    assert (spec.num_inference_steps, spec.ip_adapter_scale) == (30, 0.4)
    assert (spec.width, spec.height) == (256, 192)
    # The service's default where the style says nothing.
    assert spec.guidance_scale == GenerationDefaults().default_guidance_scale
    own = spec_of(
        request(
            style="pencil",
            style_prompt="ink",
            negative_prompt="blur",
            num_inference_steps=12,
            ip_adapter_scale=0.9,
            width=128,
            height=64,
        ),
        book(),
    )
    assert (own.style_prompt, own.negative_prompt) == ("ink", "blur")
    assert (own.num_inference_steps, own.ip_adapter_scale, own.width, own.height) == (
        12,
        0.9,
        128,
        64,
    )


def test_the_strength_multiplies_the_styles_lora_scale() -> None:
    spec = spec_of(request(style="pencil", style_strength=1.5), book())
    assert spec.style_strength == 1.5
    assert spec.style_lora_scale == pytest.approx(0.8 * 1.5)
    assert spec_of(request(style="pencil", style_strength=0.0), book()).style_lora_scale == 0.0


def test_a_style_without_a_lora_has_no_digest_and_its_slot_at_scale_zero() -> None:
    spec = spec_of(request(style="plain", style_strength=0.5), book())
    assert (spec.style, spec.style_strength, spec.style_prompt) == ("plain", 0.5, "watercolour")
    assert (spec.style_digest, spec.style_lora, spec.style_lora_scale) == (None, None, 0.0)
    parameters = Parameters.from_spec(spec)
    assert (parameters.style, parameters.style_digest) == ("plain", None)


def test_a_request_without_a_style_gets_the_default_style() -> None:
    spec = spec_of(request(), book())
    assert spec.style == "pencil"
    assert spec.style_digest == PENCIL.digest
    parameters = Parameters.from_spec(spec)
    assert (parameters.style, parameters.style_strength, parameters.style_digest) == (
        "pencil",
        1.0,
        PENCIL.digest,
    )


def test_without_a_default_style_a_request_without_one_is_drawn_as_before() -> None:
    no_default = book(YAML.replace(b"default: pencil\n", b""))
    body = request(seed=3)
    assert spec_of(body, no_default) == spec_of(body, None)
    assert spec_of(body, None).style is None
    assert Parameters.from_spec(spec_of(body, None)).style_digest is None


def test_an_unknown_style_lists_the_names_and_nothing_else() -> None:
    with pytest.raises(InvalidRequest) as refused:
        spec_of(request(style="oils"), book())
    assert refused.value.message == "unknown style 'oils'; styles: pencil, plain"
    with pytest.raises(InvalidRequest, match="unknown style 'oils'; this service has no styles"):
        spec_of(request(style="oils"), None)


def test_a_long_list_of_names_is_cut() -> None:
    many = {f"s{i:03d}": {} for i in range(MAX_NAMES_LISTED + 5)}
    catalog = StyleCatalog.model_validate({"styles": many})
    styles = StyleBook(catalog, {}, "c.yaml")
    with pytest.raises(InvalidRequest, match=r"s029 \(and 5 more\)$"):
        spec_of(request(style="nope"), styles)


def test_a_strength_needs_a_style() -> None:
    with pytest.raises(InvalidRequest, match="style_strength needs a style"):
        spec_of(request(style_strength=0.5), None)


@pytest.mark.parametrize("strength", [-0.1, 1.51, "1"])
def test_the_strength_is_zero_to_one_and_a_half(strength: object) -> None:
    with pytest.raises(InvalidRequest, match="style_strength"):
        parse_request(request(style="pencil", style_strength=strength), GenerationDefaults())


def test_the_style_is_part_of_the_request_digest() -> None:
    from consumer.contract.request import request_digest

    defaults = GenerationDefaults()
    plain = request_digest(parse_request(request(), defaults))
    styled = request_digest(parse_request(request(style="pencil"), defaults))
    stronger = request_digest(parse_request(request(style="pencil", style_strength=0.5), defaults))
    assert len({plain, styled, stronger}) == 3
