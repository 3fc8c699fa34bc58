"""What a warm-up and the proof at start draw: small specs of chosen shapes.

Kept apart from the generator so that its own module holds the drawing, and
these plain values (the steps, the gray reference, the spec of one case) are
declared once for both uses.
"""

from __future__ import annotations

from PIL import Image

from pipeline.api.batch import batch_pixels
from pipeline.api.spec import GenerationSpec, JobKind, uses_negative_prompt

WARMUP_STEPS = 2
# The reference picture of a warm-up: any picture will do, a small one is quick.
WARMUP_IMAGE_SIZE = 64


def gray_reference() -> Image.Image:
    """The reference picture a warm-up or a proof draws with."""
    return Image.new("RGB", (WARMUP_IMAGE_SIZE,) * 2, "gray")


def warm_up_spec(
    kind: JobKind, guidance: float, pictures: int, width: int, height: int, steps: int
) -> GenerationSpec:
    """A spec of the given shape with plain text, for warm-ups and proofs."""
    return GenerationSpec(
        kind=kind,
        prompt="warm-up",
        style_prompt="",
        negative_prompt="",
        num_inference_steps=steps,
        ip_adapter_scale=0.5,
        guidance_scale=guidance,
        seed=0,
        width=width,
        height=height,
        num_images=pictures,
    )


def size_text(spec: GenerationSpec) -> str:
    """``pictures x width x height``, for log lines and messages."""
    return f"{spec.num_images}x{spec.width}x{spec.height}"


def footprint(spec: GenerationSpec) -> int:
    """What a generation's activations grow with: the latents' pixels, doubled
    under classifier-free guidance (the UNet draws each picture twice)."""
    copies = 2 if uses_negative_prompt(spec.guidance_scale) else 1
    return copies * batch_pixels(spec)
