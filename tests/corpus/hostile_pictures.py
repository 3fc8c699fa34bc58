"""The worst pictures of each format and mode the input rules accept, and one they must not.

Each is built at test time at the pixel cap (``MAX_INPUT_PIXELS`` = 40 MP)
within ``MAX_INPUT_BYTES`` (20 MiB): the shapes and modes that cost a
decoder the most time or memory, for the measured table of
docs/contract.md section 2 and the preparation's bounds.

* PNG: 8-bit RGB, 8-bit RGBA and 16-bit RGBA at the widest shape; 16-bit
  greyscale, which preparing widens to 32 bits; a 16 MiB EXIF block
  (``eXIf``) of 65,535 entries.
* JPEG: baseline 4:2:0 at the widest shape; progressive 4:4:4 of noise
  filling the byte limit (the most coefficients to decode); progressive
  CMYK (four full-size coefficient planes, about 320 MB); a 16 MiB ICC
  profile in 255 segments.
* WebP: lossy at the widest shape WebP allows (16383 pixels); lossless
  with alpha at the cap (OpenCV decodes four bytes a pixel).
* Refused: a progressive JPEG of some 300,000 scans (each scan walks every
  block of the picture: hours of CPU time in 20 MiB).
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tests.corpus.worst_pictures import MAX_INPUT_PIXELS, MIB, blocks, encode, worst_size

MAX_INPUT_BYTES = 20 * MIB
SQUARE = (math.isqrt(MAX_INPUT_PIXELS),) * 2
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Hostile:
    """One picture: its name, format, size, bytes, and whether it must be refused."""

    name: str
    fmt: str
    size: tuple[int, int]
    data: bytes
    refused: bool = False


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _png(width: int, height: int, depth: int, colour: int, rows: np.ndarray) -> bytes:
    """A PNG written here: `rows` are the unfiltered scanlines, big-endian samples."""
    compressor = zlib.compressobj(1)
    parts = []
    for start in range(0, height, 256):
        band = rows[start : start + 256]
        filtered = np.concatenate([np.zeros((len(band), 1), np.uint8), band], axis=1)
        parts.append(compressor.compress(filtered.tobytes()))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", b"".join(parts))
        + _chunk(b"IEND", b"")
    )


def _wide_samples(size: tuple[int, int], channels: int, dtype: str, seed: int) -> np.ndarray:
    """Blocks of noise (32 x 4 of them), `channels` samples of `dtype` a pixel, as bytes."""
    width, height = size
    top = np.iinfo(np.dtype(dtype)).max + 1
    small = np.random.default_rng(seed).integers(0, top, (4, 32, channels), dtype=dtype)
    big = np.repeat(np.repeat(small, -(-height // 4), axis=0)[:height], -(-width // 32), axis=1)
    big = big[:, :width].astype(np.dtype(dtype).newbyteorder(">"))
    return big.reshape(height, -1).view(np.uint8)


def png_rgb() -> Hostile:
    size = worst_size("PNG")
    return Hostile("PNG 8-bit RGB", "PNG", size, encode(blocks(size), "PNG"))


def png_rgba() -> Hostile:
    size = worst_size("PNG")
    rows = _wide_samples(size, 4, "uint8", 11)
    return Hostile("PNG 8-bit RGBA", "PNG", size, _png(*size, 8, 6, rows))


def png_rgba_16() -> Hostile:
    size = worst_size("PNG")
    rows = _wide_samples(size, 4, "uint16", 12)
    return Hostile("PNG 16-bit RGBA", "PNG", size, _png(*size, 16, 6, rows))


def png_grey_16() -> Hostile:
    size = worst_size("PNG")
    rows = _wide_samples(size, 1, "uint16", 13)
    return Hostile("PNG 16-bit grey", "PNG", size, _png(*size, 16, 0, rows))


def exif_block(entries: int, value_bytes: int) -> bytes:
    """A big-endian TIFF block (an EXIF payload) with one IFD of `entries`
    entries, each a distinct tag of type UNDEFINED with a value of its own."""
    first = 8 + 2 + 12 * entries + 4
    values = value_bytes * entries
    table = b"".join(
        struct.pack(">HHII", i, 7, value_bytes, first + i * value_bytes) for i in range(entries)
    )
    return (
        b"MM\x00\x2a"
        + struct.pack(">I", 8)
        + struct.pack(">H", entries)
        + table
        + b"\x00" * 4
        + bytes(values)
    )


def _png_with(extra: bytes, size: tuple[int, int]) -> bytes:
    """A PNG of `size` (blocks of noise) with the chunk `extra` before its pixels."""
    base = io.BytesIO()
    blocks(size).save(base, format="PNG", compress_level=1)
    data = base.getvalue()
    split = data.index(b"IDAT") - 4
    return data[:split] + extra + data[split:]


def png_huge_exif() -> Hostile:
    size = worst_size("PNG")
    exif = exif_block(65_535, 256)
    return Hostile("PNG 16 MiB EXIF", "PNG", size, _png_with(_chunk(b"eXIf", exif), size))


def _jpeg(image: Image.Image, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", **options)
    return out.getvalue()


def jpeg_baseline() -> Hostile:
    size = worst_size("JPEG")
    return Hostile("JPEG baseline 4:2:0", "JPEG", size, encode(blocks(size), "JPEG"))


def jpeg_progressive_444_noise() -> Hostile:
    rng = np.random.default_rng(21)
    noise = Image.fromarray(rng.integers(0, 256, (*SQUARE[::-1], 3), dtype=np.uint8), "RGB")
    data = _jpeg(noise, quality=30, progressive=True, subsampling=0)
    return Hostile("JPEG progressive 4:4:4, noise", "JPEG", SQUARE, data)


def jpeg_progressive_cmyk() -> Hostile:
    image = blocks(SQUARE).convert("CMYK")
    data = _jpeg(image, quality=90, progressive=True)
    return Hostile("JPEG progressive CMYK", "JPEG", SQUARE, data)


def jpeg_huge_icc() -> Hostile:
    size = worst_size("JPEG")
    # 255 segments of 65,519 bytes: the most an ICC profile may span in a JPEG.
    icc = bytes(255 * 65_519)
    data = _jpeg(blocks(size), quality=85, icc_profile=icc)
    return Hostile("JPEG 16 MiB ICC", "JPEG", size, data)


def _segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each JPEG segment; a scan's end includes its data."""
    found, at = [], 2
    while at < len(data) and data[at + 1] != 0xD9:
        marker = data[at + 1]
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        end = at + 2 + length
        if marker == 0xDA:
            while not (
                data[end] == 0xFF and data[end + 1] != 0 and not 0xD0 <= data[end + 1] <= 0xD7
            ):
                end += 1
        found.append((marker, at, end))
        at = end
    return found


def jpeg_many_scans(limit: int = MAX_INPUT_BYTES, size: tuple[int, int] | None = None) -> Hostile:
    """A flat progressive JPEG (at the cap unless `size`) whose last scan is
    repeated up to `limit` bytes.

    Every copy is valid (a refinement with nothing to refine), a few dozen
    bytes long, and makes the decoder walk every block once more (625,000
    at the cap).
    """
    size = size or worst_size("JPEG")
    data = _jpeg(Image.new("RGB", size, (120, 80, 200)), quality=90, progressive=True)
    scans = [s for s in _segments(data) if s[0] == 0xDA]
    _, start, end = scans[-1]
    copies = (limit - len(data)) // (end - start)
    bomb = data[:end] + data[start:end] * copies + b"\xff\xd9"
    name = f"JPEG progressive, {len(scans) + copies:,} scans"
    return Hostile(name, "JPEG", size, bomb, refused=True)


def webp_lossless_alpha() -> Hostile:
    image = blocks(SQUARE).convert("RGBA")
    image.putalpha(blocks(SQUARE, seed=9).convert("L"))  # an alpha that varies: kept
    out = io.BytesIO()
    image.save(out, format="WEBP", lossless=True, quality=0, method=0)
    return Hostile("WebP lossless RGBA", "WEBP", SQUARE, out.getvalue())


def webp_lossy_wide() -> Hostile:
    size = worst_size("WEBP")
    out = io.BytesIO()
    blocks(size).save(out, format="WEBP", quality=80, method=0)
    return Hostile("WebP lossy, widest", "WEBP", size, out.getvalue())


ACCEPTED: tuple[Callable[[], Hostile], ...] = (
    png_rgb,
    png_rgba,
    png_rgba_16,
    png_grey_16,
    png_huge_exif,
    jpeg_baseline,
    jpeg_progressive_444_noise,
    jpeg_progressive_cmyk,
    jpeg_huge_icc,
    webp_lossy_wide,
    webp_lossless_alpha,
)
REFUSED: tuple[Callable[[], Hostile], ...] = (jpeg_many_scans,)
