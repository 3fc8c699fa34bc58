"""Every image of the bad-input corpus through the safe decoder and the preparation."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from pipeline.api.errors import InvalidImageError
from pipeline.api.images import decode_image
from pipeline.api.reference import DEFAULT_MAX_ASPECT, InputLimits, prepare_reference
from tests.corpus.corpus import MAX_INPUT_BYTES, ImageCase, image_cases
from tests.corpus.make_images import builders

MAX_INPUT_PIXELS = 40_000_000
LIMITS = InputLimits(MAX_INPUT_BYTES, MAX_INPUT_PIXELS, DEFAULT_MAX_ASPECT)
ENCODER_SIDE = 32
CASES = image_cases()


def ids(case: ImageCase) -> str:
    return case.name


def decode(
    data: bytes, max_bytes: int = MAX_INPUT_BYTES, max_pixels: int = MAX_INPUT_PIXELS
) -> Image.Image:
    return decode_image(
        data, max_bytes=max_bytes, max_pixels=max_pixels, max_aspect=DEFAULT_MAX_ASPECT
    )


def test_the_corpus_is_large_and_matches_the_generator() -> None:
    assert len(CASES) >= 15
    assert sum(case.expect != "ok" for case in CASES) >= 15
    on_disk = {case.name for case in CASES if case.name in builders()}
    assert on_disk == set(builders()), "manifest and make_images.py disagree"
    for case in CASES:
        assert case.expect in {"ok", "invalid_input"}
        assert (case.expect == "ok") == (case.size is not None), case.name


@pytest.mark.parametrize("case", [c for c in CASES if c.expect == "ok"], ids=ids)
def test_accepted_images_decode_to_upright_rgb(case: ImageCase) -> None:
    image = decode(case.data)
    assert image.mode == "RGB"
    assert image.size == case.size, case.why
    # Fully decoded: using the pixels needs no more reading of the source.
    assert len(image.tobytes()) == 3 * image.size[0] * image.size[1]


@pytest.mark.parametrize("case", [c for c in CASES if c.expect == "ok"], ids=ids)
def test_accepted_images_are_prepared_for_the_encoder(case: ImageCase) -> None:
    # Small pictures are not reduced: upright RGB of the same size.
    assert prepare_reference(case.data, LIMITS, None).size == case.size, case.why
    square = prepare_reference(case.data, LIMITS, ENCODER_SIDE)
    assert square.mode == "RGB"
    assert square.size == (ENCODER_SIDE, ENCODER_SIDE)


@pytest.mark.parametrize("case", [c for c in CASES if c.expect != "ok"], ids=ids)
def test_refused_images_raise_only_invalid_image_error(case: ImageCase) -> None:
    with pytest.raises(InvalidImageError) as caught:
        decode(case.data)
    message = str(caught.value)
    assert message
    assert len(message) < 1000
    for side in (None, ENCODER_SIDE):
        with pytest.raises(InvalidImageError) as prepared:
            prepare_reference(case.data, LIMITS, side)
        assert 0 < len(str(prepared.value)) < 1000


@pytest.mark.parametrize("case", [c for c in CASES if "aspect_9" in c.name], ids=ids)
def test_shapes_beyond_the_aspect_limit_say_so(case: ImageCase) -> None:
    with pytest.raises(InvalidImageError, match="aspect ratio is over the limit of 8"):
        prepare_reference(case.data, LIMITS, ENCODER_SIDE)
    # The limit is a setting: allowed wider, the same picture is used.
    wider = InputLimits(MAX_INPUT_BYTES, MAX_INPUT_PIXELS, 9.0)
    assert prepare_reference(case.data, wider, ENCODER_SIDE).size == (ENCODER_SIDE,) * 2


def test_transparency_is_laid_over_white() -> None:
    (case,) = [c for c in CASES if c.name == "palette_transparency.png"]
    image = decode(case.data)
    source = Image.open(io.BytesIO(case.data))
    transparent = source.info["transparency"]
    at = next(
        (x, y)
        for y in range(source.height)
        for x in range(source.width)
        if source.getpixel((x, y)) == transparent
    )
    assert image.getpixel(at) == (255, 255, 255)


def test_limits_are_inclusive_and_exact() -> None:
    (case,) = [c for c in CASES if c.name == "rgb.png"]
    pixels = 64 * 48
    decode(case.data, max_bytes=len(case.data), max_pixels=pixels)
    with pytest.raises(InvalidImageError):
        decode(case.data, max_bytes=len(case.data) - 1)
    with pytest.raises(InvalidImageError):
        decode(case.data, max_pixels=pixels - 1)
