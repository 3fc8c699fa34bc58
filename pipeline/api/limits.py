"""Every limit a request is held to, declared once.

The request model's field constraints, the settings' defaults, the JSON
Schema, the contract's table of limits and ``illustrator schema`` all read
these declarations, so one number can never say two things. It lives in the
torch-free pipeline API because every part of the service may import it,
the settings included; most of the limits are the GPU's anyway (sizes,
steps, pictures, cost, prompt tokens).

A limit that a setting can move (``setting``) is declared with its default;
the service enforces the setting's value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

# A request's cost is counted in steps of one 1024x1024 picture.
COST_UNIT_PIXELS = 1024 * 1024
# The cost of the default request (50 steps of one 1024x1024 picture): the
# generation deadline GENERATION_TIMEOUT_S is that of a request of this cost.
REFERENCE_COST = 50.0
# CLIP's window: a start token, 75 text tokens and an end token.
WINDOW_TEXT_TOKENS = 75

Applies = Literal["request", "input", "derived"]


@dataclass(frozen=True, slots=True)
class Limit:
    """One bound the service holds a request (or its input picture) to.

    Attributes:
        name: the request field(s) or the quantity it bounds.
        minimum, maximum: the inclusive range (``None``: unbounded on that side).
        unit: what is counted, for people ("characters", "pixels", ...).
        multiple_of: the step the value must be a multiple of, if any.
        setting: the environment variable that moves ``maximum`` (its
            default is ``maximum``), if any.
        applies: ``request`` (a field of the body), ``input`` (the input
            picture) or ``derived`` (computed from several fields).
        schema: whether JSON Schema states it (on the field of the same name).
        rule: one line for the contract's table.
    """

    name: str
    minimum: int | float | None
    maximum: int | float
    unit: str = ""
    multiple_of: int | None = None
    setting: str | None = None
    applies: Applies = "request"
    schema: bool = True
    rule: str = ""

    def range_text(self) -> str:
        """The range as the contract writes it: ``1-150``, ``0.0-1.0``, ``at most 2000``."""
        if self.minimum is None:
            return f"at most {_number(self.maximum)}"
        return f"{_number(self.minimum)}-{_number(self.maximum)}"

    def as_document(self) -> dict[str, Any]:
        """The limit as the generated documents list it (``x-limits``)."""
        document: dict[str, Any] = {"name": self.name}
        if self.minimum is not None:
            document["minimum"] = self.minimum
        document["maximum"] = self.maximum
        if self.multiple_of is not None:
            document["multipleOf"] = self.multiple_of
        if self.unit:
            document["unit"] = self.unit
        if self.setting:
            document["setting"] = self.setting
        document["rule"] = self.rule
        return document


def _number(value: int | float) -> str:
    if isinstance(value, float):
        return f"{value:.1f}" if value == int(value) else f"{value:g}"
    return f"{value:,}" if value >= 10_000 else str(value)


BODY_BYTES = Limit(
    "body",
    None,
    256 * 1024,
    "bytes",
    applies="derived",
    schema=False,
    rule="UTF-8 JSON object, at most 256 KiB",
)
IDENTIFIER = Limit(
    "job_id, user_id",
    1,
    128,
    "characters",
    rule="characters of A-Z a-z 0-9 _ -",
)
TEXT = Limit(
    "prompt, style_prompt, negative_prompt",
    None,
    2000,
    "characters",
    rule="a memory job's prompt at least 1",
)
STEPS = Limit("num_inference_steps", 1, 150, "steps", rule="denoising steps")
IP_ADAPTER_SCALE = Limit("ip_adapter_scale", 0.0, 1.0, rule="finite")
GUIDANCE_SCALE = Limit("guidance_scale", 0.0, 20.0, rule="finite; at most 1 turns guidance off")
SEED = Limit("seed", 0, 2**32 - 1, rule="picture i uses (seed + i) mod 2^32")
SIDE = Limit("width, height", 64, 2048, "pixels", multiple_of=64, rule="default: the model's own")
NUM_IMAGES = Limit("num_images", 1, 4, "pictures", rule="drawn in one batch")
STYLE_STRENGTH = Limit(
    "style_strength", 0.0, 1.5, rule="finite; multiplies the style's LoRA scale; needs a style"
)
IMAGE_KEY = Limit(
    "image_key",
    1,
    1024,
    "characters",
    rule="A-Z a-z 0-9 . _ / -, in the user's own namespace, no empty, . or .. segment",
)
BATCH_PIXELS = Limit(
    "num_images x width x height",
    None,
    4 * 1024 * 1024,
    "pixels",
    setting="MAX_BATCH_PIXELS",
    applies="derived",
    schema=False,
    rule="the pixels of one batch, with the defaults filled in",
)
REQUEST_COST = Limit(
    "cost",
    None,
    200,
    "1024x1024 steps",
    setting="MAX_REQUEST_COST",
    applies="derived",
    schema=False,
    rule="num_inference_steps x num_images x width x height / 1024^2",
)
PROMPT_TOKENS = Limit(
    "prompt tokens",
    None,
    8 * WINDOW_TEXT_TOKENS,
    "tokens",
    setting="MAX_PROMPT_TOKENS",
    applies="derived",
    schema=False,
    rule="the prompt with its style prompt (and the negative prompt), in the model's own tokenizer",
)
INPUT_BYTES = Limit(
    "input picture size",
    None,
    20 * 1024 * 1024,
    "bytes",
    setting="MAX_INPUT_BYTES",
    applies="input",
    schema=False,
    rule="PNG, JPEG or WebP",
)
INPUT_PIXELS = Limit(
    "input picture pixels",
    None,
    40_000_000,
    "pixels",
    setting="MAX_INPUT_PIXELS",
    applies="input",
    schema=False,
    rule="width x height",
)
INPUT_ASPECT = Limit(
    "input picture aspect",
    None,
    8,
    "longer side / shorter side",
    setting="MAX_INPUT_ASPECT",
    applies="input",
    schema=False,
    rule="",
)

LIMITS: tuple[Limit, ...] = (
    BODY_BYTES,
    IDENTIFIER,
    TEXT,
    STEPS,
    IP_ADAPTER_SCALE,
    GUIDANCE_SCALE,
    SEED,
    SIDE,
    NUM_IMAGES,
    STYLE_STRENGTH,
    IMAGE_KEY,
    BATCH_PIXELS,
    REQUEST_COST,
    PROMPT_TOKENS,
    INPUT_BYTES,
    INPUT_PIXELS,
    INPUT_ASPECT,
)
"""Every limit, in the order the contract lists them."""


def request_cost(steps: int, num_images: int, width: int, height: int) -> float:
    """What a generation costs, in denoising steps of one 1024x1024 picture.

    ``steps x num_images x width x height / 1024^2``: the default request (50
    steps, one 1024x1024 picture) costs 50, four pictures of 1024x1024 at 50
    steps 200, one 2048x2048 picture at 50 steps 200 too.
    """
    return steps * num_images * width * height / COST_UNIT_PIXELS
