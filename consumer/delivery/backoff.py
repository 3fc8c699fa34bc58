"""Backoff, as pure functions of the attempt number.

Two kinds: the contract's retry backoff for a request that failed transiently
(deterministic, so operators can predict when it comes back), and a jittered
backoff for the receive loop itself, so that a fleet of workers that lost
their credentials at once does not retry in lockstep.
"""

from __future__ import annotations

import math
import random

# SQS refuses a visibility timeout above 12 hours.
SQS_MAX_VISIBILITY_S = 43_200
# 2**64 seconds is already far beyond any cap; larger exponents only risk overflow.
_MAX_EXPONENT = 64


def retry_delay(attempt: int, base_s: float, max_s: float) -> int:
    """Seconds to hide a request after its `attempt`-th transient failure.

    ``base_s * 2 ** (attempt - 1)`` capped at `max_s` (contract section 4),
    rounded up to whole seconds because SQS visibility timeouts are integers,
    and never above SQS's own limit. `attempt` counts from 1.
    """
    exponent = min(max(attempt, 1) - 1, _MAX_EXPONENT)
    delay = min(base_s * 2.0**exponent, max_s, float(SQS_MAX_VISIBILITY_S))
    return max(0, math.ceil(delay))


class JitteredBackoff:
    """Exponential backoff with "equal jitter" for the worker's own AWS calls.

    Each delay is half the exponential step plus a random share of the other
    half: never zero (no spinning), never in lockstep with other workers.
    """

    def __init__(
        self, base_s: float = 1.0, max_s: float = 60.0, rng: random.Random | None = None
    ) -> None:
        self.base_s = base_s
        self.max_s = max_s
        self.failures = 0
        self._rng = rng or random.SystemRandom()

    def next_delay(self) -> float:
        """Record one more failure and return how long to wait before retrying."""
        self.failures += 1
        step = min(self.base_s * 2.0 ** min(self.failures - 1, _MAX_EXPONENT), self.max_s)
        return step / 2 + self._rng.uniform(0, step / 2)

    def reset(self) -> None:
        """The call succeeded: the next failure starts from the base again."""
        self.failures = 0
