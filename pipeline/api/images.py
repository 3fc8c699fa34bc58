"""Safe decoding of users' input pictures.

Bounds are checked before any pixel is decoded: the byte count first, then
the format from its magic bytes, then the pixel count from the header. A
small file that claims a huge canvas (a decompression bomb) is refused
without allocating it.
"""

from __future__ import annotations

import io

from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.api.errors import InvalidImageError

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP")
_RIFF, _WEBP = b"RIFF", b"WEBP"
# Pillow has its own bomb limits (warning, then error at twice the limit);
# ours is checked first, and theirs is reported the same way if it trips.
_BOMB_ERRORS = (Image.DecompressionBombError,)
# Pillow's modes for 16-bit greyscale PNGs (by version and byte order).
_WIDE_GREY = frozenset({"I", "I;16", "I;16B", "I;16L"})


def sniff_format(data: bytes) -> str | None:
    """``"PNG"``, ``"JPEG"`` or ``"WEBP"`` from the magic bytes, else ``None``."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == _RIFF and data[8:12] == _WEBP:
        return "WEBP"
    return None


def open_image(
    data: bytes, *, max_bytes: int, max_pixels: int, max_aspect: float | None = None
) -> Image.Image:
    """Open a PNG, JPEG or WebP picture, reading its header only.

    Raises:
        InvalidImageError: more than `max_bytes` bytes, more than `max_pixels`
            pixels, a longer side more than `max_aspect` times the shorter
            (when given), another format, or a header that cannot be read.
    """
    if len(data) > max_bytes:
        raise InvalidImageError(
            f"input image is {len(data)} bytes, more than the limit of {max_bytes}"
        )
    found = sniff_format(data)
    if found is None:
        raise InvalidImageError("input image is not a PNG, JPEG or WebP picture")
    image = _open(data, found)
    width, height = image.size
    if width * height > max_pixels:
        raise InvalidImageError(
            f"input image is {width}x{height} = {width * height} pixels, "
            f"more than the limit of {max_pixels}"
        )
    if max_aspect is not None and max(width, height) > max_aspect * min(width, height):
        raise InvalidImageError(
            f"input image is {width}x{height}: its aspect ratio is over the limit of "
            f"{max_aspect:g} (the longer side at most {max_aspect:g} times the shorter)"
        )
    return image


def decode_image(
    data: bytes, *, max_bytes: int, max_pixels: int, max_aspect: float | None = None
) -> Image.Image:
    """Decode a PNG, JPEG or WebP picture into an upright RGB image of its full size.

    For a quick check of a file; the worker prepares its input with
    :func:`pipeline.api.reference.prepare_reference`, which never holds the full
    size longer than it must.

    Raises:
        InvalidImageError: as :func:`open_image`, or a truncated or corrupt file.
    """
    image = open_image(data, max_bytes=max_bytes, max_pixels=max_pixels, max_aspect=max_aspect)
    found = image.format
    try:
        image.load()
        upright = ImageOps.exif_transpose(image)
    except _BOMB_ERRORS as error:
        raise InvalidImageError(f"input image has too many pixels: {error}") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise InvalidImageError(f"input {found} image is truncated or corrupt: {error}") from error
    return to_rgb(upright)


def _open(data: bytes, found: str) -> Image.Image:
    """Read only the header, with Pillow limited to the format the bytes claim."""
    try:
        return Image.open(io.BytesIO(data), formats=[found])
    except _BOMB_ERRORS as error:
        raise InvalidImageError(f"input image has too many pixels: {error}") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as error:
        raise InvalidImageError(f"input {found} image cannot be read: {error}") from error


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with any transparency laid over white rather than black.

    Avatars are often PNGs with a transparent background; dropping the alpha
    channel would turn it black, which the IP-Adapter would take as content.
    16-bit greyscale is scaled to 8 bits (a plain conversion would clip every
    value above 255 to white).
    """
    if image.mode in _WIDE_GREY:
        image = image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    if not has_alpha:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background
