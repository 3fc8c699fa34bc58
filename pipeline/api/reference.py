"""The reference picture: a user's upload made into what the image encoder sees.

One step, the same for every generator that uses a reference (all but
``builtin:blank``), with bounded memory whatever the picture's shape:

1. the header is checked before any pixel is decoded: bytes, format, pixel
   count and aspect ratio (see :func:`pipeline.api.images.open_image`);
2. the picture is decoded already reduced where the format allows (JPEG's
   draft mode scales by 1/2, 1/4 or 1/8 inside the decoder), then reduced by
   a whole factor (:meth:`PIL.Image.Image.reduce`) until its longer side is
   under twice :data:`WORK_SIDE`; WebP is decoded by OpenCV, once (see
   :func:`_decode_webp`), and only its first frame;
3. the EXIF orientation is applied and transparency laid over white, on the
   reduced picture;
4. it is framed around the largest face, else padded to a square
   (:mod:`pipeline.api.framing`), drawn directly at the encoder's input size.

No canvas larger than the encoder's input is ever made. A resource failure
(out of memory) while preparing one picture is that picture's
:class:`~pipeline.api.errors.InvalidImageError`, never the worker's end.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from pipeline.api.errors import InvalidImageError
from pipeline.api.framing import DETECT_SIDE, framed_square
from pipeline.api.images import open_image, to_rgb

DEFAULT_MAX_ASPECT = 8.0
"""The longest an accepted picture's longer side may be, in shorter sides."""
WORK_SIDE = 4 * DETECT_SIDE
"""Pictures are reduced by whole factors until their longer side is under twice this.

Large enough that a face the detector can just find (24 of its 512 pixels)
still fills a 224-pixel encoder input at full resolution.
"""

_ORIENTATION = 0x0112
# EXIF orientation -> the transposition that makes the picture upright.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Modes Image.reduce cannot work on, and what they become first.
_REDUCIBLE = {"1": "L", "I;16": "I", "I;16B": "I", "I;16L": "I"}


@dataclass(frozen=True, slots=True)
class InputLimits:
    """What an accepted input picture may be: bytes, pixels and aspect ratio."""

    max_bytes: int
    max_pixels: int
    max_aspect: float = DEFAULT_MAX_ASPECT


def prepare_reference(data: bytes, limits: InputLimits, side: int | None) -> Image.Image:
    """The encoder's square RGB picture of `side` pixels made from an upload.

    With `side` ``None`` (a generator that uses no reference) the picture is
    still checked and decoded, and returned upright in RGB, reduced as in
    step 2 of the module's docstring.

    Raises:
        InvalidImageError: a picture beyond `limits`, not a PNG, JPEG or WebP,
            truncated or corrupt, or one that preparing ran out of memory on.
    """
    image = open_image(
        data,
        max_bytes=limits.max_bytes,
        max_pixels=limits.max_pixels,
        max_aspect=limits.max_aspect,
    )
    found = image.format
    try:
        working = _decode_webp(data, image) if found == "WEBP" else _decode_reduced(image)
        if side is None:
            return working
        return framed_square(working, side)
    except MemoryError as error:
        # The failed allocation is given back; the worker itself is fine.
        raise InvalidImageError(
            f"input {found} image of {image.width}x{image.height} needs more memory "
            "to prepare than a preparation may use"
        ) from error
    except Image.DecompressionBombError as error:
        raise InvalidImageError(f"input image has too many pixels: {error}") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise InvalidImageError(f"input {found} image is truncated or corrupt: {error}") from error


def reference_from_image(image: Image.Image, side: int) -> Image.Image:
    """The same preparation for a picture already decoded (steps 2 to 4)."""
    orientation = _orientation(image)
    return framed_square(to_rgb(_upright(_reduce(image), orientation)), side)


def _decode_reduced(image: Image.Image) -> Image.Image:
    factor = _factor(image.size)
    if factor > 1:
        # JPEG only; other formats ignore it. The decoder's scale keeps the
        # picture at least this large, the reduction below does the rest.
        image.draft(None, (image.width // factor, image.height // factor))
    image.load()
    orientation = _orientation(image)
    return to_rgb(_upright(_reduce(image), orientation))


def _decode_webp(data: bytes, image: Image.Image) -> Image.Image:
    # Pillow decodes WebP through libwebp's animation decoder, which keeps
    # two canvases and hands over a third copy: four times the decoded size.
    # OpenCV decodes the first frame once, alpha included; Pillow has read
    # the header and the EXIF orientation.
    import cv2
    import numpy as np

    try:
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as error:  # OpenCV reports a failed allocation this way too
        raise InvalidImageError(f"input WEBP image cannot be decoded: {error}") from error
    if pixels is None or pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise InvalidImageError("input WEBP image is truncated or corrupt")
    if (pixels.shape[1], pixels.shape[0]) != image.size:
        raise InvalidImageError(
            f"input WEBP image's header says {image.width}x{image.height}, "
            f"its data {pixels.shape[1]}x{pixels.shape[0]}"
        )
    factor = _factor(image.size)
    if factor > 1:
        size = (image.width // factor, image.height // factor)
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
    alpha = pixels.shape[2] == 4
    pixels = cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGBA if alpha else cv2.COLOR_BGR2RGB)
    working = Image.fromarray(pixels, "RGBA" if alpha else "RGB")
    return to_rgb(_upright(working, _orientation(image)))


def _factor(size: tuple[int, int]) -> int:
    return max(1, max(size) // WORK_SIDE)


def _reduce(image: Image.Image) -> Image.Image:
    factor = _factor(image.size)
    if factor == 1:
        return image
    if image.mode in _REDUCIBLE:
        image = image.convert(_REDUCIBLE[image.mode])
    elif image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    return image.reduce(factor)


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(_ORIENTATION, 1)
    except (OSError, SyntaxError, ValueError, EOFError, KeyError, TypeError):
        # A corrupt EXIF block leaves the picture as stored, as viewers do.
        return 1
    return value if isinstance(value, int) else 1


def _upright(image: Image.Image, orientation: int) -> Image.Image:
    method = _UPRIGHT.get(orientation)
    return image if method is None else image.transpose(method)
