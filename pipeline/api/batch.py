"""Several pictures per request: their seeds and what a batch costs in pixels.

Torch-free, so the consumer can bound a request's batch before any model
work (``MAX_BATCH_PIXELS``).
"""

from __future__ import annotations

from pipeline.api.limits import BATCH_PIXELS, SEED, request_cost
from pipeline.api.spec import GenerationSpec

SEED_MODULUS = int(SEED.maximum) + 1
# Four 1024x1024 pictures: SDXL's native size at the contract's largest batch.
DEFAULT_MAX_BATCH_PIXELS = int(BATCH_PIXELS.maximum)


def image_seeds(spec: GenerationSpec) -> list[int]:
    """The seed of each picture: ``(spec.seed + i) % 2**32`` for i in ``range(num_images)``."""
    return [(spec.seed + i) % SEED_MODULUS for i in range(spec.num_images)]


def batch_pixels(spec: GenerationSpec) -> int:
    """The pixels one generation draws: ``num_images * width * height``."""
    return spec.num_images * spec.width * spec.height


def batch_cost(spec: GenerationSpec) -> float:
    """What drawing `spec` costs, in steps of one 1024x1024 picture
    (:func:`pipeline.api.limits.request_cost`)."""
    return request_cost(spec.num_inference_steps, spec.num_images, spec.width, spec.height)
