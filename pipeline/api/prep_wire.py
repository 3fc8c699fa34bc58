"""What the worker and its picture-preparing processes say to each other.

Two channels (see :mod:`pipeline.api.preparer`):

* the **control** socket (``SOCK_SEQPACKET``, one packet a message) between
  the worker and the preparing server: :data:`READY` once the server is
  warm; :data:`FORK` with a task socket attached, answered :data:`FORKED`
  and the new process's id (or :data:`FAILED` and why); :data:`REAP` and a
  process id, answered :data:`REAPED` and its wait status;
* a **task** socket per picture between the worker and the process that
  prepares it: the picture's length and bytes one way, one reply the other.

A reply is :data:`OK` with the prepared picture's size, the process's
memory and CPU figures and its RGB pixels, or :data:`INVALID` /
:data:`ERROR` with a message. The worker never unpickles what a preparing
process sends: every reply is read as these fixed fields, checked against
what the task allows, and nothing else.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass

DEFAULT_PREP_TIMEOUT_S = 10.0
"""How long preparing one picture may take by default (``INPUT_PREP_TIMEOUT_S``)."""

READY, FORK, FORKED, FAILED, REAP, REAPED = b"R", b"F", b"P", b"X", b"W", b"S"
OK, INVALID, ERROR = b"O", b"I", b"E"
PID = struct.Struct("!i")
LENGTH = struct.Struct("!Q")
# Width, height, peak KiB, start KiB, address space added KiB, CPU microseconds.
PICTURE = struct.Struct("!IIQQQQ")
MAX_MESSAGE = 4096
CONTROL_PACKET = 64


@dataclass(frozen=True, slots=True)
class PrepConfig:
    """What every preparation of one worker shares: the input rules, the
    encoder's side (``None``: no reference is drawn) and the process limits."""

    max_bytes: int
    max_pixels: int
    max_aspect: float
    side: int | None
    cpu_s: int
    memory_bytes: int

    def to_json(self) -> str:
        """The config as one JSON argument."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> PrepConfig:
        """The config from :meth:`to_json`'s text."""
        return cls(**json.loads(text))


@dataclass(frozen=True, slots=True)
class Figures:
    """What preparing one picture took, as its process measured it."""

    peak_kib: int
    """The process's peak resident memory (``VmHWM``)."""
    start_kib: int
    """Its resident memory as it began (mostly pages shared with the server)."""
    added_kib: int
    """The address space it added at its peak (``VmPeak`` less its start): what
    the memory limit bounds."""
    cpu_s: float


def message_reply(kind: bytes, text: str) -> bytes:
    """An :data:`INVALID` or :data:`ERROR` reply."""
    return kind + text.encode("utf-8", "replace")[:MAX_MESSAGE]


def picture_reply(width: int, height: int, figures: Figures, pixels: bytes) -> bytes:
    """An :data:`OK` reply."""
    cpu_us = max(0, round(figures.cpu_s * 1e6))
    fields = (width, height, figures.peak_kib, figures.start_kib, figures.added_kib, cpu_us)
    return OK + PICTURE.pack(*fields) + pixels


def reply_limit(config: PrepConfig, work_side: int) -> int:
    """The largest reply a task of `config` may send: a picture of the
    encoder's side, or one reduced to under twice `work_side` a side."""
    longest = config.side if config.side is not None else 2 * work_side
    return 1 + PICTURE.size + 3 * longest * longest + MAX_MESSAGE
