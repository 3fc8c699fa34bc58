"""A request's generation deadline, from its cost: a pure function.

A request's cost (:func:`pipeline.api.limits.request_cost`, in denoising
steps of one 1024x1024 picture) is bounded by ``MAX_REQUEST_COST``, so its
time on a healthy GPU is bounded too. ``GENERATION_TIMEOUT_S`` is the
deadline of a generation of :data:`~pipeline.api.limits.REFERENCE_COST` (the
default request: 50 steps of one 1024x1024 picture) or less, and a costlier
one gets it in proportion: 200 (four such pictures, or one 2048x2048) four
times as long. At the default of 600 s that is 12 s per 1024x1024 step, some
ten times what the slowest GPU of the fleet is expected to need even at
2048x2048 (docs/architecture.md, "Costs and deadlines"); so a generation
past its deadline tells of a failing GPU, not of a heavy request.
"""

from __future__ import annotations

from pipeline.api.limits import REFERENCE_COST


def deadline_s(cost: float, timeout_s: float) -> float:
    """Seconds a generation of `cost` may take: `timeout_s` (``GENERATION_TIMEOUT_S``)
    up to :data:`REFERENCE_COST`, in proportion to the cost above it."""
    return timeout_s * max(1.0, cost / REFERENCE_COST)
