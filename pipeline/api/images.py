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


def sniff_format(data: bytes) -> str | None:
    """``"PNG"``, ``"JPEG"`` or ``"WEBP"`` from the magic bytes, else ``None``."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == _RIFF and data[8:12] == _WEBP:
        return "WEBP"
    return None


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """Decode a PNG, JPEG or WebP picture into an upright RGB image.

    Raises:
        InvalidImageError: more than `max_bytes` bytes, more than `max_pixels`
            pixels (checked from the header, before decoding), another
            format, or a truncated or corrupt file.
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
    try:
        image.load()
        upright = ImageOps.exif_transpose(image)
    except _BOMB_ERRORS as error:
        raise InvalidImageError(f"input image has too many pixels: {error}") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise InvalidImageError(f"input {found} image is truncated or corrupt: {error}") from error
    return _to_rgb(upright)


def _open(data: bytes, found: str) -> Image.Image:
    """Read only the header, with Pillow limited to the format the bytes claim."""
    try:
        return Image.open(io.BytesIO(data), formats=[found])
    except _BOMB_ERRORS as error:
        raise InvalidImageError(f"input image has too many pixels: {error}") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as error:
        raise InvalidImageError(f"input {found} image cannot be read: {error}") from error


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with any transparency laid over white rather than black.

    Avatars are often PNGs with a transparent background; dropping the alpha
    channel would turn it black, which the IP-Adapter would take as content.
    """
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    if not has_alpha:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background
