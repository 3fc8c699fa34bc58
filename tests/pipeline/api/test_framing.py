"""Framing the input picture around the person before the image encoder."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

from pipeline.api import framing
from pipeline.api.framing import (
    DETECT_SIDE,
    FACE_MARGIN,
    PAD_COLOUR,
    frame_person,
    largest_face,
)
from pipeline.api.spec import JobKind
from pipeline.engine.generator import SDXLGenerator
from tests.support.assets import noise_picture, one, pixels, tall_photo
from tests.support.specs import spec


def test_tall_photo_is_framed_around_the_face() -> None:
    photo = tall_photo()
    face = largest_face(photo)
    assert face is not None
    _x, y, w, h = face
    assert y + h < 450  # found where the portrait was pasted
    framed = frame_person(photo)
    assert framed.width == framed.height
    assert framed.width == pytest.approx(FACE_MARGIN * max(w, h), abs=2)
    again = largest_face(framed)
    assert again is not None
    fx, fy, fw, fh = again
    assert fx >= 0
    assert fx + fw <= framed.width
    assert fy >= 0
    assert fy + fh <= framed.height
    # The same face, at the same scale: nothing was resized away.
    assert fw == pytest.approx(w, rel=0.25)


def test_frame_running_off_the_picture_is_moved_onto_it() -> None:
    photo = tall_photo()
    face = largest_face(photo)
    assert face is not None
    framed = framing.frame_face(photo, face)
    # The face is near the top edge: the square is moved down, never padded.
    assert PAD_COLOUR not in {framed.getpixel((i, 0)) for i in range(framed.width)}


@pytest.mark.parametrize("size", [(96, 80), (64, 224), (50, 50)])
def test_picture_without_a_face_is_padded_whole_into_a_square(size: tuple[int, int]) -> None:
    picture = noise_picture(3, size)
    assert largest_face(picture) is None
    framed = frame_person(picture)
    side = max(size)
    assert framed.size == (side, side)
    left, top = (side - size[0]) // 2, (side - size[1]) // 2
    inner = framed.crop((left, top, left + size[0], top + size[1]))
    assert np.array_equal(pixels(inner), pixels(picture))
    padding = np.asarray(framed, dtype=np.int16).reshape(-1, 3)
    assert (padding == PAD_COLOUR).all(axis=1).sum() == side * side - size[0] * size[1]


def test_detector_sees_large_pictures_scaled_down(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, ...]] = []

    class Recorder:
        def detectMultiScale(self, gray: Any, **_: Any) -> list[Any]:
            seen.append(gray.shape)
            return []

    monkeypatch.setattr(framing, "_detector", Recorder)
    largest_face(Image.new("RGB", (4000, 3000)))
    largest_face(Image.new("RGB", (300, 200)))
    assert seen == [(DETECT_SIDE * 3 // 4, DETECT_SIDE), (200, 300)]


def test_detector_is_loaded_once() -> None:
    assert framing._detector() is framing._detector()


def test_top_of_a_tall_picture_reaches_a_subject_picture(tiny: SDXLGenerator) -> None:
    # The CLIP preprocessor's centre crop of a 64x224 picture keeps only its
    # middle 64 rows; padded to a square first, every row reaches the encoder.
    picture = noise_picture(4, (64, 224))
    changed = picture.copy()
    changed.paste((255, 0, 0), (0, 0, 64, 40))
    job = spec(kind=JobKind.SUBJECT, ip_adapter_scale=1.0)
    first = pixels(one(tiny, job, picture))
    second = pixels(one(tiny, job, changed))
    assert np.abs(first - second).mean() > 0.05
