"""Preparing the reference picture: bounded memory, the same picture on every path."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pipeline.api import framing, reference
from pipeline.api.errors import InvalidImageError
from pipeline.api.framing import PAD_COLOUR, frame_person, framed_square
from pipeline.api.reference import WORK_SIDE, InputLimits, prepare_reference, reference_from_image
from pipeline.api.spec import JobKind
from pipeline.engine import generator as sdxl
from pipeline.engine.generator import SDXLGenerator
from tests.support.assets import noise_picture, one, pixels, tall_photo
from tests.support.specs import spec

LIMITS = InputLimits(max_bytes=20 * 1024 * 1024, max_pixels=40_000_000, max_aspect=8.0)
SIDE = 224


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    """The mean absolute difference of two pictures' pixels, 0 to 1."""
    return float(np.abs(pixels(a) - pixels(b)).mean()) / 255


def test_a_face_is_framed_as_frame_person_frames_it_at_the_encoders_size() -> None:
    photo = tall_photo()
    direct = framed_square(photo, SIDE)
    assert direct.size == (SIDE, SIDE)
    expected = frame_person(photo).resize((SIDE, SIDE), Image.Resampling.BICUBIC)
    assert mean_difference(direct, expected) < 2 / 255


def test_a_wide_picture_is_padded_whole_into_the_square() -> None:
    wide = Image.new("RGB", (800, 100), (10, 120, 30))
    square = prepare_reference(encode(wide, "PNG"), LIMITS, SIDE)
    assert square.size == (SIDE, SIDE)
    # The band of the picture across the middle, padding above and below.
    assert square.getpixel((SIDE // 2, SIDE // 2)) == (10, 120, 30)
    assert square.getpixel((SIDE // 2, 2)) == PAD_COLOUR
    assert square.getpixel((SIDE // 2, SIDE - 3)) == PAD_COLOUR
    band = [y for y in range(SIDE) if square.getpixel((SIDE // 2, y)) == (10, 120, 30)]
    assert len(band) == pytest.approx(SIDE / 8, abs=2)


def test_no_canvas_is_larger_than_the_encoder_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[tuple[int, int]] = []
    new = Image.new

    def recording_new(mode: str, size: tuple[int, int], *args: Any, **kwargs: Any) -> Any:
        made.append(tuple(size))
        return new(mode, size, *args, **kwargs)

    monkeypatch.setattr(framing.Image, "new", recording_new)
    picture = noise_picture(5, (64, 8)).resize((4000, 500), Image.Resampling.NEAREST)
    prepare_reference(encode(picture, "PNG"), LIMITS, SIDE)
    assert made
    assert max(max(size) for size in made) <= SIDE


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_a_large_picture_is_worked_on_reduced(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, int]] = []
    square = framing.framed_square

    def recording(image: Image.Image, side: int) -> Image.Image:
        seen.append(image.size)
        return square(image, side)

    monkeypatch.setattr(reference, "framed_square", recording)
    picture = noise_picture(6, (48, 8)).resize((12000, 2000), Image.Resampling.NEAREST)
    data = encode(picture, fmt)
    prepared = prepare_reference(data, LIMITS, SIDE)
    (working,) = seen
    assert WORK_SIDE <= max(working) < 2 * WORK_SIDE
    assert working[0] / working[1] == pytest.approx(6, rel=0.01)
    # The same picture as the full-size one prepared, up to resampling.
    full = Image.open(io.BytesIO(data)).convert("RGB")
    assert mean_difference(prepared, reference_from_image(full, SIDE)) < 3 / 255


def test_exif_orientation_is_applied_after_reducing() -> None:
    picture = Image.new("RGB", (9000, 1200), (0, 0, 200))
    picture.paste((200, 0, 0), (0, 0, 1000, 1200))  # the stored left end is red
    exif = picture.getexif()
    exif[0x0112] = 6  # shown turned a quarter clockwise: the left end on top
    data = encode(picture, "JPEG", quality=90, exif=exif.tobytes())
    upright = prepare_reference(data, LIMITS, None)
    assert upright.height > upright.width
    red, _green, blue = upright.getpixel((upright.width // 2, 5))
    assert red > 150
    assert blue < 80


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    grey = Image.new("I;16", (16, 16))
    grey.putdata([0x8000] * 256)
    prepared = prepare_reference(encode(grey, "PNG"), LIMITS, None)
    assert prepared.getpixel((8, 8)) == (128, 128, 128)


def test_running_out_of_memory_is_the_pictures_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    def exhausted(*_: Any, **__: Any) -> Image.Image:
        raise MemoryError

    monkeypatch.setattr(reference, "framed_square", exhausted)
    data = encode(noise_picture(7, (96, 80)), "PNG")
    with pytest.raises(InvalidImageError, match="needs more memory"):
        prepare_reference(data, LIMITS, SIDE)


def test_the_generator_prepares_a_raw_picture_as_the_consumer_does(
    tiny: SDXLGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    side = tiny.reference_side
    assert side == 32
    encoded: list[Image.Image] = []
    encode_reference = sdxl.encode_reference

    def recording(pipe: Any, image: Image.Image, guidance: bool) -> Any:
        encoded.append(image)
        return encode_reference(pipe, image, guidance)

    monkeypatch.setattr(sdxl, "encode_reference", recording)
    photo = encode(tall_photo(), "JPEG", quality=95)
    prepared = prepare_reference(photo, LIMITS, side)
    raw = Image.open(io.BytesIO(photo)).convert("RGB")
    job = spec(kind=JobKind.SUBJECT, ip_adapter_scale=1.0)
    from_prepared = pixels(one(tiny, job, prepared))
    from_raw = pixels(one(tiny, job, raw))
    # The encoder sees the same square either way, so the pictures agree.
    assert [picture.size for picture in encoded] == [(side, side)] * 2
    assert np.array_equal(pixels(encoded[0]), pixels(prepared))
    assert np.array_equal(pixels(encoded[1]), pixels(prepared))
    assert np.abs(from_prepared - from_raw).max() <= 1  # pixels() are 0-255: 1/255


def test_opencv_running_out_of_memory_on_a_webp_is_the_pictures_fault(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import cv2

    def exhausted(*_: Any) -> Any:
        raise cv2.error("Insufficient memory")

    monkeypatch.setattr(cv2, "imdecode", exhausted)
    data = encode(noise_picture(8, (96, 80)), "WEBP")
    with pytest.raises(InvalidImageError, match="cannot be decoded"):
        prepare_reference(data, LIMITS, SIDE)
