"""Arrival traces and generation times for the fleet simulation."""

from __future__ import annotations

import math
import random

HOUR = 3600.0


def constant(rate_per_h: float, hours: float) -> list[float]:
    """Evenly spaced arrivals."""
    gap = HOUR / rate_per_h
    return [i * gap for i in range(int(rate_per_h * hours))]


def steady(rate_per_h: float, hours: float, rng: random.Random) -> list[float]:
    """Poisson arrivals at a constant rate."""
    out, t = [], rng.expovariate(rate_per_h / HOUR)
    while t < hours * HOUR:
        out.append(t)
        t += rng.expovariate(rate_per_h / HOUR)
    return out


def daily(peak_per_h: float, rng: random.Random, days: float = 1.0) -> list[float]:
    """Poisson arrivals whose rate follows a day: zero at 04:00, `peak_per_h` at 16:00."""
    out = []
    for t in steady(peak_per_h, days * 24, rng):
        phase = 2 * math.pi * (t / HOUR - 4) / 24
        if rng.random() < (1 - math.cos(phase)) / 2:
            out.append(t)
    return out


def book(pictures: int = 300) -> list[float]:
    """A whole book's memories sent at once onto an idle, empty fleet."""
    return [0.0] * pictures


def generation_times(n: int, low: float, high: float, rng: random.Random) -> list[float]:
    """Seconds per picture on the reference GPU, uniform in [low, high]."""
    return [rng.uniform(low, high) for _ in range(n)]
