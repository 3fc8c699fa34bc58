"""Several pictures per request: their seeds and what a batch costs in pixels.

Torch-free, so the consumer can bound a request's batch before any model
work (``MAX_BATCH_PIXELS``).
"""

from __future__ import annotations

import math

from pipeline.api.limits import BATCH_PIXELS, NUM_IMAGES, SEED, SIDE, request_cost
from pipeline.api.spec import GenerationSpec

SEED_MODULUS = int(SEED.maximum) + 1
# What a request may ask for (pipeline.api.limits): up to MAX_IMAGES pictures,
# each side a multiple of SIDE_STEP from MIN_SIDE to MAX_SIDE.
MAX_IMAGES = int(NUM_IMAGES.maximum)
MIN_SIDE, MAX_SIDE = int(SIDE.minimum or 0), int(SIDE.maximum)
SIDE_STEP = int(SIDE.multiple_of or 1)
# Four 1024x1024 pictures: SDXL's native size at the contract's largest batch.
DEFAULT_MAX_BATCH_PIXELS = int(BATCH_PIXELS.maximum)


def image_seeds(spec: GenerationSpec) -> list[int]:
    """The seed of each picture: ``(spec.seed + i) % 2**32`` for i in ``range(num_images)``."""
    return [(spec.seed + i) % SEED_MODULUS for i in range(spec.num_images)]


def largest_requests(native: tuple[int, int], max_batch_pixels: int) -> list[tuple[int, int, int]]:
    """The largest requests the limits allow, as (pictures, width, height).

    The most pictures at the native size, and the largest square picture
    (the largest decode), each within `max_batch_pixels`; the first is left
    out when not even one native picture fits. These bound a generation's
    memory: the denoising by its pixels in all, the decode by one picture's.
    """
    width, height = native
    cases: list[tuple[int, int, int]] = []
    pictures = min(MAX_IMAGES, max_batch_pixels // (width * height))
    if pictures:
        cases.append((pictures, width, height))
    side = max(MIN_SIDE, min(MAX_SIDE, math.isqrt(max_batch_pixels) // SIDE_STEP * SIDE_STEP))
    # A square of the native size is the batch case's own picture.
    if not cases or (side, side) != native:
        cases.append((1, side, side))
    return cases


def batch_pixels(spec: GenerationSpec) -> int:
    """The pixels one generation draws: ``num_images * width * height``."""
    return spec.num_images * spec.width * spec.height


def batch_cost(spec: GenerationSpec) -> float:
    """What drawing `spec` costs, in steps of one 1024x1024 picture
    (:func:`pipeline.api.limits.request_cost`)."""
    return request_cost(spec.num_inference_steps, spec.num_images, spec.width, spec.height)
