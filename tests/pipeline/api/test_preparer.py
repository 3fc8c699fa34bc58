"""Pictures prepared in processes of their own: bounded in time and memory, without secrets.

Real processes throughout: the preparing server, the process forked for each
picture, its limits, and pictures that take hours to decode (a progressive
JPEG of thousands of scans), need too much memory, or crash their decoder.
"""

from __future__ import annotations

import dataclasses
import io
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from pipeline.api.errors import InvalidImageError
from pipeline.api.preparer import Preparer
from pipeline.api.reference import InputLimits, prepare_reference
from tests.corpus.hostile_pictures import jpeg_many_scans

LIMITS = InputLimits(max_bytes=20 * 1024 * 1024, max_pixels=40_000_000, max_aspect=8.0)
SIDE = 224
SECRETS = {
    "AUTH_TOKEN": "token-that-must-stay-home",
    "AWS_SECRET_ACCESS_KEY": "secret-key-that-must-stay-home",
    "AWS_SESSION_TOKEN": "session-that-must-stay-home",
}


def _photo(size: tuple[int, int] = (640, 480), fmt: str = "JPEG") -> bytes:
    image = Image.new("RGB", size, (30, 90, 160))
    image.paste((230, 200, 40), (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


@pytest.fixture(scope="module")
def slow_jpeg() -> bytes:
    """A 12 MP progressive JPEG of some 30,000 scans: many minutes of CPU to decode."""
    return jpeg_many_scans(limit=2 * 1024 * 1024, size=(4000, 3000)).data


@pytest.fixture
def preparer(monkeypatch: pytest.MonkeyPatch) -> Iterator[Preparer]:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    prepared = Preparer(LIMITS, SIDE, timeout_s=2.0)
    prepared.start()
    yield prepared
    prepared.close()


def _server_pid(preparer: Preparer) -> int:
    assert preparer._server is not None
    return preparer._server.pid


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def _while_preparing(preparer: Preparer, data: bytes) -> tuple[threading.Thread, list[object]]:
    """Start preparing `data` in a thread; the thread and where its outcome lands."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(preparer.prepare(data))
        except Exception as error:
            outcome.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def _preparing_process(preparer: Preparer) -> int:
    server = _server_pid(preparer)
    deadline = time.monotonic() + 30
    while not (children := _children(server)):
        assert time.monotonic() < deadline, "no preparing process appeared"
        time.sleep(0.01)
    return children[0]


def test_a_picture_is_prepared_as_in_the_worker_itself(preparer: Preparer) -> None:
    data = _photo()

    prepared = preparer.prepare(data)

    assert prepared.image.tobytes() == prepare_reference(data, LIMITS, SIDE).tobytes()
    assert prepared.image.size == (SIDE, SIDE)
    assert prepared.figures.peak_kib > 0
    assert prepared.figures.cpu_s > 0


def test_without_a_side_the_checked_picture_comes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    unframed = Preparer(LIMITS, None, timeout_s=10)
    try:
        prepared = unframed.prepare(_photo((800, 100), "PNG"))
    finally:
        unframed.close()
    assert prepared.image.size == (800, 100)


def test_a_refused_picture_is_invalid_input_with_its_reason(preparer: Preparer) -> None:
    with pytest.raises(InvalidImageError, match="aspect ratio"):
        preparer.prepare(_photo((900, 100), "PNG"))
    with pytest.raises(InvalidImageError, match="not a PNG, JPEG or WebP"):
        preparer.prepare(b"GIF89a" + bytes(100))


def test_neither_the_server_nor_a_preparing_process_holds_a_secret(
    preparer: Preparer, slow_jpeg: bytes
) -> None:
    thread, _ = _while_preparing(preparer, slow_jpeg)
    child = _preparing_process(preparer)
    try:
        for pid in (_server_pid(preparer), child):
            environment = Path(f"/proc/{pid}/environ").read_bytes()
            for name, value in SECRETS.items():
                assert name.encode() not in environment
                assert value.encode() not in environment
            # The decoders only: no torch in the process that reads a stranger's file.
            assert "libtorch" not in Path(f"/proc/{pid}/maps").read_text()
    finally:
        thread.join()


def test_a_picture_past_the_deadline_is_invalid_input_and_the_next_is_served(
    preparer: Preparer, slow_jpeg: bytes
) -> None:
    started = time.monotonic()
    with pytest.raises(InvalidImageError, match="took longer than 2 s"):
        preparer.prepare(slow_jpeg)
    assert time.monotonic() - started < 2 + 3  # killed at the deadline, not left to run
    assert _children(_server_pid(preparer)) == []  # and reaped
    assert preparer.prepare(_photo()).image.size == (SIDE, SIDE)


def test_the_other_slot_is_served_while_one_picture_runs_to_its_deadline(
    preparer: Preparer, slow_jpeg: bytes
) -> None:
    thread, outcome = _while_preparing(preparer, slow_jpeg)
    _preparing_process(preparer)

    for _ in range(3):
        assert preparer.prepare(_photo()).image.size == (SIDE, SIDE)
    assert outcome == []  # the slow one is still being prepared meanwhile

    thread.join()
    assert isinstance(outcome[0], InvalidImageError)


def test_a_picture_that_needs_more_memory_than_allowed_is_invalid_input() -> None:
    tight = Preparer(LIMITS, SIDE, timeout_s=30, memory_bytes=16 * 1024 * 1024)
    try:
        # 12 MP: 36 MB decoded, more than the process may add.
        with pytest.raises(InvalidImageError, match="memory"):
            tight.prepare(_photo((4000, 3000), "PNG"))
        assert tight.prepare(_photo()).image.size == (SIDE, SIDE)
    finally:
        tight.close()


def test_a_decoder_that_crashes_is_invalid_input(preparer: Preparer, slow_jpeg: bytes) -> None:
    thread, outcome = _while_preparing(preparer, slow_jpeg)
    os.kill(_preparing_process(preparer), signal.SIGSEGV)
    thread.join()

    assert isinstance(outcome[0], InvalidImageError)
    assert "decoder crashed (SIGSEGV)" in str(outcome[0])
    assert preparer.prepare(_photo()).image.size == (SIDE, SIDE)


def test_cpu_time_is_bounded_even_without_the_workers_deadline(slow_jpeg: bytes) -> None:
    backstop = Preparer(LIMITS, SIDE, timeout_s=60)
    backstop.config = dataclasses.replace(backstop.config, cpu_s=1)
    try:
        with pytest.raises(InvalidImageError, match="more than 1 s of CPU time"):
            backstop.prepare(slow_jpeg)
    finally:
        backstop.close()


def test_a_server_that_died_is_started_again(preparer: Preparer) -> None:
    first = _server_pid(preparer)
    assert preparer.prepare(_photo()).image.size == (SIDE, SIDE)
    os.kill(first, signal.SIGKILL)

    assert preparer.prepare(_photo()).image.size == (SIDE, SIDE)
    assert _server_pid(preparer) != first


def test_closing_ends_the_server() -> None:
    preparer = Preparer(LIMITS, SIDE)
    preparer.prepare(_photo())
    pid = _server_pid(preparer)

    preparer.close()

    assert not Path(f"/proc/{pid}").exists()
