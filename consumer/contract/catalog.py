"""The style catalog: named looks a request picks with ``style`` (docs/contract.md).

The catalog is configuration, read at start from ``STYLES_PATH`` (YAML or
JSON) and validated here, torch-free, as the settings are::

    default: pencil            # optional: the style of a request that names none
    styles:
      pencil:
        style_prompt: "professional pencil sketch, monochrome"
        negative_prompt: "color, photo"
        lora: styles/pencil.safetensors    # optional; relative to the catalog
        lora_scale: 0.8                    # optional, default 1.0
        defaults: {num_inference_steps: 30, ip_adapter_scale: 0.4}

A :class:`StyleBook` is a catalog with its LoRA files fetched and checked
(:mod:`consumer.aws.style_source`); :func:`resolve_style` picks a request's
style from it, and :func:`styled_defaults` lays the style under the
request's own fields.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from consumer.contract.validation import describe
from consumer.errors import InvalidRequest
from consumer.settings import GenerationDefaults
from pipeline.api.lora_files import LoraFacts

MAX_CATALOG_BYTES = 1024 * 1024
MAX_STYLES = 256
MAX_NAMES_LISTED = 30
STYLE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
StyleName = Annotated[str, Field(pattern=STYLE_NAME_PATTERN)]

# The request fields a style may give defaults for, each validated as the
# request validates it (consumer.contract.request declares the limits).
DEFAULTABLE = ("num_inference_steps", "guidance_scale", "ip_adapter_scale", "width", "height")
# Where each default goes in the service's defaults; width and height replace
# the model's native size.
_SETTING = {
    "num_inference_steps": "default_num_inference_steps",
    "guidance_scale": "default_guidance_scale",
    "ip_adapter_scale": "default_ip_adapter_scale",
}


class CatalogError(ValueError):
    """A catalog that cannot be parsed or is not valid; the message says where."""


@functools.cache
def _request_field(name: str) -> TypeAdapter[Any]:
    # One validator per field, built once: a catalog has up to MAX_STYLES
    # styles with a few defaults each. Imported here: the request module imports this one.
    from consumer.contract.request import Request

    annotation: Any = Request.model_fields[name].annotation
    return TypeAdapter(annotation, config=ConfigDict(strict=True))


class Style(BaseModel):
    """One named look: prompts, an optional LoRA, and request defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    style_prompt: str | None = Field(
        None, max_length=2000, description="The style prompt; default: the kind's own."
    )
    negative_prompt: str | None = Field(
        None, max_length=2000, description="The negative prompt; default: the service's."
    )
    lora: str | None = Field(
        None,
        min_length=1,
        max_length=1024,
        description="A .safetensors LoRA: s3:// URI, absolute path, or relative to the catalog.",
    )
    lora_scale: float = Field(1.0, ge=0.0, le=4.0, allow_inf_nan=False)
    defaults: dict[str, Any] = Field(default_factory=dict)

    @field_validator("lora")
    @classmethod
    def _safetensors(cls, value: str | None) -> str | None:
        if value is not None and not value.endswith(".safetensors"):
            raise ValueError("must name a .safetensors file")
        return value

    @field_validator("defaults")
    @classmethod
    def _known_defaults(cls, values: dict[str, Any]) -> dict[str, Any]:
        checked = {}
        for name, value in values.items():
            if name not in DEFAULTABLE:
                raise ValueError(
                    f"{name} is not a default a style may set ({', '.join(DEFAULTABLE)})"
                )
            try:
                checked[name] = _request_field(name).validate_python(value)
            except ValidationError as error:
                raise ValueError(f"{name}: {error.errors()[0]['msg']}") from None
            if checked[name] is None:
                raise ValueError(f"{name}: a default must have a value")
        return checked


class StyleCatalog(BaseModel):
    """The catalog file: its styles by name and the default one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: StyleName | None = None
    styles: dict[StyleName, Style] = Field(min_length=1, max_length=MAX_STYLES)

    @model_validator(mode="after")
    def _default_exists(self) -> StyleCatalog:
        if self.default is not None and self.default not in self.styles:
            raise ValueError(f"default {self.default!r} is not one of the styles")
        return self


def parse_catalog(data: bytes, name: str) -> StyleCatalog:
    """The catalog in `data`, read from a file called `name` (``.json`` is
    JSON, anything else YAML). Raises :class:`CatalogError` saying why not."""
    if len(data) > MAX_CATALOG_BYTES:
        raise CatalogError(f"{len(data)} bytes; a catalog is at most {MAX_CATALOG_BYTES}")
    try:
        text = data.decode("utf-8")
        raw = json.loads(text) if name.endswith(".json") else yaml.safe_load(text)
    except UnicodeDecodeError:
        raise CatalogError("not UTF-8") from None
    except (ValueError, yaml.YAMLError) as error:
        kind = "JSON" if name.endswith(".json") else "YAML"
        raise CatalogError(f"not {kind}: {_first_line(error)}") from None
    if not isinstance(raw, dict):
        raise CatalogError("must be a map with 'styles' (and optionally 'default')")
    try:
        return StyleCatalog.model_validate(raw)
    except ValidationError as error:
        raise CatalogError(describe(error, "catalog", 3)) from None


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def lora_source(catalog_source: str, lora: str) -> str:
    """Where a style's `lora` is: as given when absolute (``s3://`` or ``/``),
    else beside the catalog at `catalog_source` (a path or ``s3://`` URI)."""
    if lora.startswith(("s3://", "/")):
        return lora
    parent = catalog_source.rsplit("/", 1)[0] if "/" in catalog_source else "."
    if catalog_source.startswith("s3://"):
        return f"{parent}/{PurePosixPath(lora)}"
    return str(PurePosixPath(parent) / lora)


@dataclass(frozen=True, slots=True)
class StyleLora:
    """A style's LoRA file, fetched and checked: local path, digest, header facts."""

    source: str
    path: str
    digest: str
    facts: LoraFacts


@dataclass(frozen=True, slots=True)
class StyleBook:
    """A valid catalog with its LoRA files, as the worker serves it."""

    catalog: StyleCatalog
    loras: Mapping[str, StyleLora]
    source: str

    @property
    def names(self) -> list[str]:
        """The styles' names, sorted."""
        return sorted(self.catalog.styles)


@dataclass(frozen=True, slots=True)
class ResolvedStyle:
    """The style a request runs in, with its LoRA file if any."""

    name: str
    style: Style
    lora: StyleLora | None


def resolve_style(
    name: str | None, strength: float | None, book: StyleBook | None
) -> ResolvedStyle | None:
    """The style named `name`, else the catalog's default; ``None`` for none.

    Raises :class:`InvalidRequest` for a name the catalog does not have (the
    message lists the names and nothing else of the catalog) and for a
    strength without a style.
    """
    chosen = name if name is not None else (book.catalog.default if book else None)
    if chosen is None:
        if strength is not None:
            raise InvalidRequest("style_strength needs a style")
        return None
    if book is None or chosen not in book.catalog.styles:
        raise InvalidRequest(f"unknown style {chosen!r}; {_known(book)}")
    return ResolvedStyle(chosen, book.catalog.styles[chosen], book.loras.get(chosen))


def _known(book: StyleBook | None) -> str:
    if book is None:
        return "this service has no styles"
    names = book.names
    listed = ", ".join(names[:MAX_NAMES_LISTED])
    more = len(names) - MAX_NAMES_LISTED
    return f"styles: {listed}" + (f" (and {more} more)" if more > 0 else "")


def styled_defaults(
    style: ResolvedStyle, defaults: GenerationDefaults, native_size: tuple[int, int]
) -> tuple[GenerationDefaults, tuple[int, int]]:
    """The service's defaults and native size with `style`'s laid over them;
    the request's own fields then win over both."""
    update: dict[str, Any] = {
        _SETTING[name]: value for name, value in style.style.defaults.items() if name in _SETTING
    }
    if style.style.style_prompt is not None:
        update["default_memory_style_prompt"] = style.style.style_prompt
        update["default_subject_style_prompt"] = style.style.style_prompt
    if style.style.negative_prompt is not None:
        update["default_negative_prompt"] = style.style.negative_prompt
    width = style.style.defaults.get("width", native_size[0])
    height = style.style.defaults.get("height", native_size[1])
    return defaults.model_copy(update=update), (width, height)


def style_fields(style: ResolvedStyle | None, strength: float | None) -> dict[str, Any]:
    """The generation spec's style fields for a job in `style` at `strength`."""
    if style is None:
        return {}
    strength = 1.0 if strength is None else strength
    fields: dict[str, Any] = {"style": style.name, "style_strength": strength}
    if style.lora is not None:
        fields |= {
            "style_digest": style.lora.digest,
            "style_lora": style.lora.path,
            "style_lora_scale": style.style.lora_scale * strength,
        }
    return fields
