"""What one generation needs: the effective parameters of one job.

Torch-free on purpose: the consumer builds a :class:`GenerationSpec` from a
validated request without importing torch.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class JobKind(enum.StrEnum):
    """The two kinds of illustration."""

    MEMORY = "memory"
    SUBJECT = "subject"


@dataclass(frozen=True, slots=True)
class GenerationSpec:
    """The effective parameters of one job, every default already filled in.

    `prompt` is empty for a subject job without one; `seed` is always set.
    `num_images` pictures are drawn in one batch, picture i with seed
    ``(seed + i) % 2**32`` (see :mod:`pipeline.api.batch`).

    A job in a catalog style names it (`style`, with the request's
    `style_strength`); a style with a LoRA also gives the local file
    (`style_lora`), its digest (`style_digest`) and the scale the UNet's
    LoRA slot runs at (`style_lora_scale`: the style's scale times the
    strength). Without one the slot, if any, runs at scale 0.
    """

    kind: JobKind
    prompt: str
    style_prompt: str
    negative_prompt: str
    num_inference_steps: int
    ip_adapter_scale: float
    guidance_scale: float
    seed: int
    width: int
    height: int
    num_images: int = 1
    style: str | None = None
    style_strength: float | None = None
    style_digest: str | None = None
    style_lora: str | None = None
    style_lora_scale: float = 0.0


def uses_negative_prompt(guidance_scale: float) -> bool:
    """Whether a job with `guidance_scale` uses its negative prompt.

    Diffusers runs classifier-free guidance, the only use of the negative
    prompt, only above a scale of 1; at or below it the negative is neither
    encoded nor used, and the completion event reports it empty.
    """
    return guidance_scale > 1.0
