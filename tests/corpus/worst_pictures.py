"""The worst pictures the input rules accept, built at test time, and memory readings.

"Worst" is the largest pixel count at the widest allowed shape: with
``MAX_INPUT_PIXELS`` = 40,000,000 and ``MAX_INPUT_ASPECT`` = 8 that is
17888 x 2236 for PNG and JPEG; WebP cannot be wider than 16383 pixels, so
its worst is 16383 x 2047. The pictures are blocks of noise: a few hundred
KB on disk (far below ``MAX_INPUT_BYTES``), 120 MB once decoded.
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

MAX_INPUT_PIXELS = 40_000_000
MAX_INPUT_ASPECT = 8
WEBP_MAX_SIDE = 16383
MIB = 1024 * 1024


@dataclass(frozen=True)
class Worst:
    """One worst accepted picture: its format, extension, size and bytes."""

    fmt: str
    extension: str
    size: tuple[int, int]
    data: bytes


def worst_size(fmt: str) -> tuple[int, int]:
    """The largest (width, height) within the pixel limit at the widest allowed aspect."""
    width = math.isqrt(MAX_INPUT_PIXELS * MAX_INPUT_ASPECT)
    if fmt == "WEBP":
        width = min(width, WEBP_MAX_SIDE)
    height = math.ceil(width / MAX_INPUT_ASPECT)
    while width * height > MAX_INPUT_PIXELS:
        width -= 1
        height = math.ceil(width / MAX_INPUT_ASPECT)
    return width, height


def blocks(size: tuple[int, int], seed: int = 5) -> Image.Image:
    """Noise in large flat blocks: quick to encode, small on disk, any size."""
    rng = random.Random(seed)
    small = Image.frombytes("RGB", (32, 4), rng.randbytes(32 * 4 * 3))
    return small.resize(size, Image.Resampling.NEAREST)


def encode(image: Image.Image, fmt: str) -> bytes:
    """`image` in `fmt`, with quick encoder settings."""
    options: dict[str, object] = {
        "PNG": {"compress_level": 1},
        "JPEG": {"quality": 85},
        "WEBP": {"quality": 80, "method": 0},
    }[fmt]
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def worst_pictures() -> list[Worst]:
    """The worst accepted PNG, JPEG and WebP."""
    found = []
    for fmt, extension in (("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp")):
        size = worst_size(fmt)
        found.append(Worst(fmt, extension, size, encode(blocks(size), fmt)))
    return found


def _status(pid: int) -> dict[str, int]:
    """The ``Vm*`` lines of ``/proc/<pid>/status``, in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name.startswith("Vm"):
            values[name] = int(rest.split()[0])
    return values


def resident_kib(pid: int) -> int:
    """The process's resident memory now (``VmRSS``)."""
    return _status(pid)["VmRSS"]


def peak_kib(pid: int) -> int:
    """The process's peak resident memory since the last :func:`reset_peak` (``VmHWM``)."""
    return _status(pid)["VmHWM"]


def reset_peak(pid: int) -> None:
    """Set the process's peak resident memory back to its current one (Linux 4.0+)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
