"""The worst picture of each format and mode at the pixel cap, prepared as a worker does.

Each picture of :mod:`tests.corpus.hostile_pictures` goes through the
worker's own :class:`~pipeline.api.preparer.Preparer` with the default
limits: every accepted one is prepared within the memory limit and well
within ``INPUT_PREP_TIMEOUT_S`` of CPU time; the refused one ends
``invalid_input`` at the deadline. The table it prints (``-s``) is the one
in docs/contract.md section 2.

Building the pictures takes a minute, so this is a layer of its own:
``make test-inputs`` (``INPUT_CAP=1``); ``make test`` skips it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

import pytest

from pipeline.api.errors import InvalidImageError
from pipeline.api.prep_wire import DEFAULT_PREP_TIMEOUT_S
from pipeline.api.preparer import Preparer, memory_budget
from pipeline.api.reference import InputLimits
from tests.corpus.hostile_pictures import ACCEPTED, MAX_INPUT_BYTES, REFUSED, Hostile
from tests.corpus.worst_pictures import MAX_INPUT_PIXELS, MIB

pytestmark = pytest.mark.skipif(
    os.environ.get("INPUT_CAP") != "1", reason="the at-cap layer: make test-inputs"
)
LIMITS = InputLimits(MAX_INPUT_BYTES, MAX_INPUT_PIXELS, 8.0)
SIDE = 224
# CPU time a worst accepted picture may take: half the deadline, so a busy
# machine (wall time above CPU time) still prepares it in time.
CPU_SHARE = 0.5
TABLE: list[str] = []


@pytest.fixture(scope="module")
def preparer() -> Iterator[Preparer]:
    prepared = Preparer(LIMITS, SIDE)
    prepared.start()
    yield prepared
    prepared.close()
    print("\n" + "\n".join(TABLE))


def _row(picture: Hostile, outcome: str) -> None:
    width, height = picture.size
    TABLE.append(
        f"| {picture.name} | {width}x{height} | {len(picture.data) / MIB:.1f} MiB | {outcome} |"
    )


@pytest.mark.parametrize("build", ACCEPTED, ids=lambda build: build.__name__)
def test_the_worst_accepted_pictures_are_prepared_within_the_bounds(
    preparer: Preparer, build: Callable[[], Hostile]
) -> None:
    picture = build()
    assert len(picture.data) <= MAX_INPUT_BYTES
    assert picture.size[0] * picture.size[1] <= MAX_INPUT_PIXELS

    prepared = preparer.prepare(picture.data)

    figures = prepared.figures
    _row(
        picture,
        f"{prepared.wall_s:.2f} s | {figures.cpu_s:.2f} s | {figures.peak_kib / 1024:.0f} MiB "
        f"| {figures.added_kib / 1024:.0f} MiB",
    )
    assert prepared.image.size == (SIDE, SIDE)
    assert figures.cpu_s < CPU_SHARE * DEFAULT_PREP_TIMEOUT_S
    assert figures.added_kib * 1024 < memory_budget(MAX_INPUT_PIXELS)


@pytest.mark.parametrize("build", REFUSED, ids=lambda build: build.__name__)
def test_a_picture_that_takes_hours_is_refused_at_the_deadline(
    preparer: Preparer, build: Callable[[], Hostile]
) -> None:
    picture = build()
    started = time.monotonic()

    with pytest.raises(InvalidImageError, match="took longer than 10 s"):
        preparer.prepare(picture.data)

    elapsed = time.monotonic() - started
    _row(picture, f"{elapsed:.2f} s | refused | - | -")
    assert elapsed < DEFAULT_PREP_TIMEOUT_S + 2
