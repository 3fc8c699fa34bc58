"""Safe decoding of input pictures: bounds before decoding, formats, orientation."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from pipeline.api.errors import InvalidImageError
from pipeline.api.images import decode_image, sniff_format

LIMITS = {"max_bytes": 1_000_000, "max_pixels": 1_000_000}


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def halves(size: tuple[int, int] = (40, 20)) -> Image.Image:
    """Left half red, right half blue."""
    image = Image.new("RGB", size, (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, size[0] // 2, size[1]))
    return image


def png_bomb(width: int, height: int) -> bytes:
    """A small PNG claiming `width` x `height`: its header and a little pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\0" * 65_536, 9)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("fmt", "options"), [("PNG", {}), ("JPEG", {"quality": 95}), ("WEBP", {"lossless": True})]
)
def test_allowed_formats_decode_to_rgb(fmt: str, options: dict[str, object]) -> None:
    data = encode(halves(), fmt, **options)
    assert sniff_format(data) == fmt
    image = decode_image(data, **LIMITS)
    assert image.mode == "RGB"
    assert image.size == (40, 20)
    red, green, blue = image.getpixel((5, 10))  # type: ignore[misc]
    assert red > 200
    assert blue < 60
    assert green < 60


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_other_formats_are_refused(fmt: str) -> None:
    with pytest.raises(InvalidImageError, match="not a PNG, JPEG or WebP"):
        decode_image(encode(halves(), fmt), **LIMITS)


def test_text_is_refused() -> None:
    with pytest.raises(InvalidImageError, match="not a PNG, JPEG or WebP"):
        decode_image(b"hello, this is not a picture", **LIMITS)


def test_too_many_bytes_is_refused_before_anything_else() -> None:
    data = encode(halves(), "PNG")
    limit = len(data) - 1
    assert decode_image(data, max_bytes=len(data), max_pixels=10**9).size == (40, 20)
    with pytest.raises(
        InvalidImageError, match=f"{len(data)} bytes, more than the limit of {limit}"
    ):
        decode_image(data, max_bytes=limit, max_pixels=10**9)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_too_many_pixels_is_refused_from_the_header() -> None:
    # A decompression bomb: a few hundred bytes claiming 12000 x 12000 pixels
    # (430 MB decoded). Refused from its header, before any allocation.
    bomb = png_bomb(12_000, 12_000)
    assert len(bomb) < 1_000
    with pytest.raises(InvalidImageError, match="12000x12000 = 144000000 pixels, more than"):
        decode_image(bomb, max_bytes=1_000_000, max_pixels=40_000_000)


def test_enormous_claims_are_refused_too() -> None:
    # Past Pillow's own bomb limit the refusal comes from Pillow's check, at open.
    with pytest.raises(InvalidImageError, match="too many pixels"):
        decode_image(png_bomb(60_000, 60_000), max_bytes=1_000_000, max_pixels=40_000_000)


def test_pixel_limit_is_inclusive() -> None:
    data = encode(halves((100, 100)), "PNG")
    assert decode_image(data, max_bytes=10**6, max_pixels=10_000).size == (100, 100)
    with pytest.raises(InvalidImageError, match="pixels"):
        decode_image(data, max_bytes=10**6, max_pixels=9_999)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_files_are_refused(fmt: str) -> None:
    data = encode(halves((64, 64)), fmt)
    with pytest.raises(InvalidImageError, match=f"{fmt}"):
        decode_image(data[: len(data) // 2], **LIMITS)


def test_exif_orientation_is_applied() -> None:
    stored = halves((40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: rotate 90 degrees clockwise to view
    data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    image = decode_image(data, **LIMITS)
    assert image.size == (20, 40)
    top = image.getpixel((10, 5))
    bottom = image.getpixel((10, 35))
    assert top[0] > 200
    assert top[2] < 60
    assert bottom[2] > 200
    assert bottom[0] < 60


def test_transparency_becomes_white() -> None:
    clear = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    image = decode_image(encode(clear, "PNG"), **LIMITS)
    assert image.mode == "RGB"
    assert image.getpixel((4, 4)) == (255, 255, 255)


def test_greyscale_and_palette_become_rgb() -> None:
    for mode in ("L", "P", "I;16"):
        source = Image.new(mode, (8, 8))
        assert decode_image(encode(source, "PNG"), **LIMITS).mode == "RGB"
