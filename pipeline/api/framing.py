"""Framing the input picture so the image encoder sees the whole person.

The IP-Adapter's CLIP preprocessor resizes the short side and centre-crops a
square: from a tall photo it keeps the middle and drops the top, where the
face usually is. Here the picture is made square first, so that crop loses
nothing: framed around the largest face OpenCV's Haar cascade finds (the
face box grown by :data:`FACE_MARGIN` for hair, chin and shoulders), else
padded to a square with the whole picture in it. Nothing of the picture is
cut off except, when a face is found, what lies outside its frame.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import numpy as np
from PIL import Image

from pipeline.api.errors import PipelineError

FACE_MARGIN = 2.0
"""How many times the face box's larger side the framed square is."""
DETECT_SIDE = 512
"""The detector sees the picture scaled down to at most this many pixels a side."""
PAD_COLOUR = (255, 255, 255)
"""Padding, the colour transparent backgrounds become (see :mod:`pipeline.api.images`)."""
CASCADE_FILE = "haarcascade_frontalface_default.xml"

Box = tuple[int, int, int, int]
"""A face box: left, top, width, height, in the picture's pixels."""

_detector_lock = threading.Lock()


@functools.cache
def _detector() -> Any:
    # Imported and loaded on first use only, and once: the cascade takes a
    # moment to parse, and a generator without faces to find never needs it.
    import cv2
    import cv2.data

    detector = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE_FILE)
    if detector.empty():
        raise PipelineError(f"OpenCV's face detector {CASCADE_FILE} cannot be loaded")
    return detector


def largest_face(image: Image.Image) -> Box | None:
    """The largest frontal face in `image`, or ``None`` when there is none."""
    scale = min(1.0, DETECT_SIDE / max(image.size))
    small = image.convert("L")
    if scale < 1.0:
        small = small.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
            Image.Resampling.BILINEAR,
        )
    detector = _detector()
    with _detector_lock:
        # A cascade object is not safe to share between threads.
        faces = detector.detectMultiScale(
            np.asarray(small), scaleFactor=1.1, minNeighbors=5, minSize=(24, 24)
        )
    if len(faces) == 0:
        return None
    x, y, w, h = max(faces, key=lambda face: int(face[2]) * int(face[3]))
    return (round(x / scale), round(y / scale), round(w / scale), round(h / scale))


def pad_to_square(image: Image.Image) -> Image.Image:
    """`image` centred, unchanged, on a square of its longer side."""
    side = max(image.size)
    if image.width == image.height:
        return image.copy()
    return _square(image, (image.width - side) // 2, (image.height - side) // 2, side)


def frame_face(image: Image.Image, face: Box) -> Image.Image:
    """A square around `face`, grown by :data:`FACE_MARGIN`, kept on the picture.

    The square is moved to stay inside the picture where it fits; where it
    is larger than the picture's short side, the rest is padding.
    """
    left, top, side, _ = _face_window(image, face)
    return _square(image, left, top, side)


def frame_person(image: Image.Image) -> Image.Image:
    """The square picture the image encoder should see (see the module's docstring).

    The square is as large as the framed part of the picture: for pictures
    of any size, :func:`framed_square` draws it at the encoder's size instead.
    """
    rgb = image.convert("RGB")
    face = largest_face(rgb)
    return pad_to_square(rgb) if face is None else frame_face(rgb, face)


def framed_square(image: Image.Image, side: int) -> Image.Image:
    """What :func:`frame_person` frames, drawn directly at `side` x `side`.

    The square is never built at the picture's own scale: only the part of
    the picture inside it is cut out and resized, and padding is added at
    the output's size. Memory stays within the picture plus the output
    however long and narrow the picture is.
    """
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    window = _window(rgb)
    return _render(rgb, window, side)


def _window(image: Image.Image) -> Box:
    """The square :func:`frame_person` would frame: left, top, side, side."""
    face = largest_face(image)
    if face is None:
        length = max(image.size)
        return ((image.width - length) // 2, (image.height - length) // 2, length, length)
    return _face_window(image, face)


def _face_window(image: Image.Image, face: Box) -> Box:
    x, y, w, h = face
    length = min(max(1, round(FACE_MARGIN * max(w, h))), max(image.size))
    left = _place(x + w / 2 - length / 2, length, image.width)
    top = _place(y + h / 2 - length / 2, length, image.height)
    return (left, top, length, length)


def _render(image: Image.Image, window: Box, side: int) -> Image.Image:
    left, top, length, _ = window
    scale = side / length
    box = (
        max(left, 0),
        max(top, 0),
        min(left + length, image.width),
        min(top + length, image.height),
    )
    size = (max(1, round((box[2] - box[0]) * scale)), max(1, round((box[3] - box[1]) * scale)))
    part = image.crop(box).resize(size, Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (side, side), PAD_COLOUR)
    canvas.paste(part, (round((box[0] - left) * scale), round((box[1] - top) * scale)))
    return canvas


def _place(start: float, side: int, length: int) -> int:
    """Where a span of `side` starts: near `start`, within ``[0, length]`` if it fits."""
    if side >= length:
        return (length - side) // 2
    return int(min(max(round(start), 0), length - side))


def _square(image: Image.Image, left: int, top: int, side: int) -> Image.Image:
    canvas = Image.new("RGB", (side, side), PAD_COLOUR)
    canvas.paste(image, (-left, -top))
    return canvas
