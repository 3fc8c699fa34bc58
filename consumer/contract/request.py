"""The request message and its parsing (docs/contract.md, "Request").

Parsing is pure: bytes in, a validated :class:`Request` or an
:class:`~consumer.errors.InvalidRequest` out. No I/O, no clock; the random
seed for a request without one is drawn by :func:`effective_spec`.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Callable
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from consumer.contract.budget import check_cost
from consumer.contract.catalog import (
    StyleBook,
    StyleName,
    resolve_style,
    style_fields,
    styled_defaults,
)
from consumer.contract.validation import describe
from consumer.errors import InvalidRequest
from consumer.settings import GenerationDefaults
from pipeline.api import limits
from pipeline.api.batch import batch_pixels
from pipeline.api.spec import GenerationSpec, JobKind, uses_negative_prompt

# Every number below is declared in pipeline.api.limits.
MAX_BODY_BYTES = int(limits.BODY_BYTES.maximum)
MAX_TEXT = int(limits.TEXT.maximum)
MAX_SEED = int(limits.SEED.maximum)
MAX_IMAGES = int(limits.NUM_IMAGES.maximum)
MAX_STYLE_STRENGTH = float(limits.STYLE_STRENGTH.maximum)
_ID = limits.IDENTIFIER
ID_PATTERN = rf"^[A-Za-z0-9_-]{{{_ID.minimum},{_ID.maximum}}}$"
KEY_PATTERN = r"^[A-Za-z0-9._/-]+$"
_KEY_CHARACTERS = re.compile(r"[A-Za-z0-9._/-]+")
T = TypeVar("T")

Identifier = Annotated[
    str, Field(min_length=_ID.minimum, max_length=_ID.maximum, pattern=ID_PATTERN)
]
Text = Annotated[str, Field(max_length=MAX_TEXT)]
_SIDE = limits.SIDE
Side = Annotated[int, Field(ge=_SIDE.minimum, le=_SIDE.maximum, multiple_of=_SIDE.multiple_of)]
_STEPS, _IP, _GUIDANCE = limits.STEPS, limits.IP_ADAPTER_SCALE, limits.GUIDANCE_SCALE


# The request's description in the generated documents; plain text, since
# JSON Schema and AsyncAPI readers do not render reST.
REQUEST_DESCRIPTION = (
    "One illustration request, the body of an SQS message: UTF-8 JSON, at most 256 KiB. "
    "Unknown fields are rejected. Unset optional fields take the service's defaults. "
    "x-limits lists every limit the service holds a request to (defaults shown), those "
    "no schema can state included: num_images x width x height at most MAX_BATCH_PIXELS, "
    "a cost (num_inference_steps x num_images x width x height / 1024^2) at most "
    "MAX_REQUEST_COST, and the prompt with its style prompt at most MAX_PROMPT_TOKENS "
    "tokens; a request past any of them fails as invalid_request."
)


def _default(name: str) -> object:
    # The documents state the service's defaults as settings.py declares them.
    return GenerationDefaults.model_fields[name].default


class Request(BaseModel):
    """A generation request as AutoBio sends it.

    Unset optional fields stay None here; effective_spec fills them from the
    settings and the model's native size.
    """

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        json_schema_extra={
            "description": REQUEST_DESCRIPTION,
            # Every limit, those a schema cannot state included (cost, tokens).
            "x-limits": [limit.as_document() for limit in limits.LIMITS],
        },
    )

    version: Literal[1] = Field(1, description="The contract version; must be 1.")
    job_id: Identifier = Field(
        description=f"The idempotency key: {_ID.range_text()} characters of A-Z, a-z, 0-9, "
        "'_' and '-'. A redelivered or resent request with the same job_id and body is not "
        "drawn again."
    )
    kind: JobKind = Field(
        description="memory: draw the prompt, conditioned on the user's avatar; "
        "subject: a portrait of the person in the user's photo."
    )
    user_id: Identifier = Field(
        description=f"The AutoBio user: {_ID.range_text()} characters of A-Z, a-z, 0-9, '_' "
        "and '-'. Names the input picture and the output folder. A request sent with a "
        "MessageGroupId must use its user_id as that group."
    )
    prompt: Text | None = Field(
        None,
        description=f"What to draw. Required (1-{MAX_TEXT} characters) for memory; "
        f"optional (at most {MAX_TEXT}) for subject. With its style prompt at most "
        "MAX_PROMPT_TOKENS tokens of the model's tokenizer.",
    )
    num_inference_steps: Annotated[int, Field(ge=_STEPS.minimum, le=_STEPS.maximum)] | None = Field(
        None,
        description=f"Denoising steps, {_STEPS.range_text()}. Default "
        f"DEFAULT_NUM_INFERENCE_STEPS ({_default('default_num_inference_steps')}).",
    )
    ip_adapter_scale: (
        Annotated[float, Field(ge=_IP.minimum, le=_IP.maximum, allow_inf_nan=False)] | None
    ) = Field(
        None,
        description="How strongly the input picture conditions the drawing, "
        f"{_IP.range_text()}. Default DEFAULT_IP_ADAPTER_SCALE "
        f"({_default('default_ip_adapter_scale')}).",
    )
    negative_prompt: Text | None = Field(
        None,
        description=f"What to avoid, at most {MAX_TEXT} characters. Default "
        "DEFAULT_NEGATIVE_PROMPT. Unused when guidance_scale is at most 1.",
    )
    style_prompt: Text | None = Field(
        None,
        description=f"The style, at most {MAX_TEXT} characters. Default "
        "DEFAULT_MEMORY_STYLE_PROMPT or DEFAULT_SUBJECT_STYLE_PROMPT by kind.",
    )
    guidance_scale: (
        Annotated[float, Field(ge=_GUIDANCE.minimum, le=_GUIDANCE.maximum, allow_inf_nan=False)]
        | None
    ) = Field(
        None,
        description=f"Classifier-free guidance, {_GUIDANCE.range_text()}. Default "
        f"DEFAULT_GUIDANCE_SCALE ({_default('default_guidance_scale')}). "
        "At most 1: no guidance and no negative prompt.",
    )
    seed: Annotated[int, Field(ge=limits.SEED.minimum, le=MAX_SEED)] | None = Field(
        None,
        description="0 to 2^32-1. Default: drawn at random and reported in the event. "
        "Picture i of a request uses (seed + i) mod 2^32.",
    )
    width: Side | None = Field(
        None,
        description=f"Multiple of {_SIDE.multiple_of}, {_SIDE.range_text()}. Default: the "
        "model's native width.",
    )
    height: Side | None = Field(
        None,
        description=f"Multiple of {_SIDE.multiple_of}, {_SIDE.range_text()}. Default: the "
        "model's native height.",
    )
    image_key: (
        Annotated[
            str,
            Field(
                min_length=limits.IMAGE_KEY.minimum,
                max_length=limits.IMAGE_KEY.maximum,
                pattern=KEY_PATTERN,
            ),
        ]
        | None
    ) = Field(
        None,
        description="S3 key of the input picture, in the user's own namespace: it starts "
        "with the kind's input prefix (S3_AVATAR_PREFIX or S3_SUBJECT_PREFIX), then user_id, "
        "then '.' or '/' (avatars/u1.png, avatars/u1/2024.jpg); only A-Z a-z 0-9 . _ / -; "
        "no empty, '.' or '..' segment. "
        "Default: the first of <prefix><user_id>.png, .jpg, .jpeg, .webp that exists.",
    )
    num_images: Annotated[int, Field(ge=limits.NUM_IMAGES.minimum, le=MAX_IMAGES)] | None = Field(
        None,
        description=f"How many pictures to draw in one batch, {limits.NUM_IMAGES.range_text()}. "
        "Default 1. Picture 0 is <kind>_<job_id>.png, picture i >= 1 is "
        "<kind>_<job_id>.<i>.png. num_images x width x height is at most MAX_BATCH_PIXELS, "
        "and the request's cost at most MAX_REQUEST_COST (see x-limits).",
    )

    style: StyleName | None = Field(
        None,
        description="A style of the service's catalog (STYLES_PATH): its prompts, its LoRA and "
        "its defaults, under this request's own fields. Default: the catalog's default style, "
        "if any. An unknown name is invalid_request.",
    )
    style_strength: (
        Annotated[
            float,
            Field(ge=limits.STYLE_STRENGTH.minimum, le=MAX_STYLE_STRENGTH, allow_inf_nan=False),
        ]
        | None
    ) = Field(
        None,
        description=f"{limits.STYLE_STRENGTH.range_text()}, multiplies the style's LoRA scale. "
        "Default 1. Needs a style.",
    )

    @model_validator(mode="after")
    def _check_kind_rules(self) -> Request:
        if self.kind is JobKind.MEMORY and not self.prompt:
            raise ValueError(f"prompt is required for a memory job (1-{MAX_TEXT} characters)")
        return self


class RequestFields(BaseModel):
    """The identifying fields of a body, each kept only when valid on its own.

    Used to fill ``job_id``, ``kind`` and ``user_id`` of a failed event when
    the whole request did not validate.
    """

    job_id: str | None = None
    kind: str | None = None
    user_id: str | None = None


def _loads(body: bytes) -> dict[str, object]:
    if len(body) > MAX_BODY_BYTES:
        raise InvalidRequest(f"body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}")
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidRequest("body is not UTF-8") from None
    except (ValueError, RecursionError) as error:
        # ValueError covers JSONDecodeError and integers too long to convert.
        raise InvalidRequest(f"body is not JSON: {error}") from None
    if not isinstance(data, dict):
        raise InvalidRequest(f"body must be a JSON object, not {type(data).__name__}")
    return data


def input_prefix(kind: JobKind, defaults: GenerationDefaults) -> str:
    """The S3 prefix under which a kind's input images live."""
    return defaults.s3_avatar_prefix if kind is JobKind.MEMORY else defaults.s3_subject_prefix


def parse_request(body: bytes, defaults: GenerationDefaults) -> Request:
    """Validate a raw SQS body against the request contract.

    Raises :class:`InvalidRequest` with a message naming the offending fields.
    """
    data = _loads(body)
    version = data.get("version", 1)
    if type(version) is not int or version != 1:
        raise InvalidRequest(f"unsupported version {version!r}; this service speaks version 1")
    try:
        # JSON mode: strict about types (no "3" for 3, no true for 1) while
        # still reading enum values from their strings.
        request = Request.model_validate_json(body)
    except ValidationError as error:
        raise InvalidRequest(describe(error, "body", 5)) from None
    if request.image_key is not None:
        check_image_key(request.image_key, input_prefix(request.kind, defaults), request.user_id)
    return request


def check_image_key(key: str, prefix: str, user_id: str) -> None:
    """Raise :class:`InvalidRequest` unless `key` lies in `user_id`'s namespace under `prefix`.

    The namespace is ``<prefix><user_id>`` followed by ``.`` or ``/``; the
    key uses only ``A-Z a-z 0-9 . _ / -`` (no percent-encoding, no look-alike
    characters) and has no empty, ``.`` or ``..`` segment, so no reader of
    the key, S3 or any other, can take it for another user's picture.
    """
    if not _KEY_CHARACTERS.fullmatch(key):
        raise InvalidRequest("image_key may use only the characters A-Z a-z 0-9 . _ / -")
    if any(segment in ("", ".", "..") for segment in key.split("/")):
        raise InvalidRequest("image_key must not have an empty, '.' or '..' segment")
    home = prefix + user_id
    if not key.startswith(home) or key[len(home) : len(home) + 1] not in (".", "/"):
        raise InvalidRequest(
            f"image_key must start with {home + '.'!r} or {home + '/'!r}: "
            "a request reads only its own user's pictures"
        )


def identifying_fields(body: bytes) -> RequestFields:
    """Best-effort ``job_id``, ``kind`` and ``user_id`` of any body; never raises."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        return RequestFields()
    if not isinstance(data, dict):
        return RequestFields()
    found: dict[str, str] = {}
    for name, adapter in _FIELD_ADAPTERS.items():
        value = data.get(name)
        if not isinstance(value, str):
            continue
        try:
            adapter.validate_python(value)
        except ValidationError:
            continue
        found[name] = value
    return RequestFields(**found)


_FIELD_ADAPTERS: dict[str, TypeAdapter[object]] = {
    "job_id": TypeAdapter(Identifier),
    "kind": TypeAdapter(JobKind),
    "user_id": TypeAdapter(Identifier),
}


def request_digest(request: Request) -> str:
    """A digest of the request's fields, recorded on its outputs (``request-digest``).

    The same fields give the same digest whatever the body's spacing or key
    order, so a redelivery matches its output and a different request under
    the same job id does not.
    """
    fields = request.model_dump(mode="json", exclude_none=True)
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _random_seed() -> int:
    return secrets.randbelow(MAX_SEED + 1)


def effective_spec(
    request: Request,
    defaults: GenerationDefaults,
    native_size: tuple[int, int],
    draw_seed: Callable[[], int] = _random_seed,
    *,
    styles: StyleBook | None = None,
) -> GenerationSpec:
    """Fill every unset field: the style's defaults, the settings' defaults,
    native size, a random seed.

    The style is the request's, else the catalog's default (`styles`).
    Raises :class:`InvalidRequest` for an unknown style, when the batch
    (``num_images`` pictures of the effective size) passes
    ``MAX_BATCH_PIXELS``, or when its cost passes ``MAX_REQUEST_COST``.
    """
    style = resolve_style(request.style, request.style_strength, styles)
    if style is not None:
        defaults, native_size = styled_defaults(style, defaults, native_size)
    style_default = (
        defaults.default_memory_style_prompt
        if request.kind is JobKind.MEMORY
        else defaults.default_subject_style_prompt
    )
    seed = request.seed
    if seed is None:
        seed = draw_seed()
    guidance = _pick(request.guidance_scale, defaults.default_guidance_scale)
    spec = GenerationSpec(
        kind=request.kind,
        prompt=request.prompt or "",
        style_prompt=_pick(request.style_prompt, style_default),
        # Without classifier-free guidance (scale 1 or less) no negative
        # prompt is used, and the event must not claim one was.
        negative_prompt=(
            _pick(request.negative_prompt, defaults.default_negative_prompt)
            if uses_negative_prompt(guidance)
            else ""
        ),
        num_inference_steps=_pick(
            request.num_inference_steps, defaults.default_num_inference_steps
        ),
        ip_adapter_scale=_pick(request.ip_adapter_scale, defaults.default_ip_adapter_scale),
        guidance_scale=guidance,
        seed=seed,
        width=_pick(request.width, native_size[0]),
        height=_pick(request.height, native_size[1]),
        num_images=_pick(request.num_images, 1),
        **style_fields(style, request.style_strength),
    )
    if (pixels := batch_pixels(spec)) > defaults.max_batch_pixels:
        raise InvalidRequest(
            f"num_images x width x height is {pixels} pixels; "
            f"the limit is {defaults.max_batch_pixels} (MAX_BATCH_PIXELS)"
        )
    check_cost(spec, defaults.max_request_cost)
    return spec


def _pick(value: T | None, default: T) -> T:
    return default if value is None else value
