"""Preparing users' pictures in processes of their own, bounded in time and memory.

A decoder bug a picture could exploit, a picture that takes minutes to
decode (a progressive JPEG of very many scans) or one that needs too much
memory must cost that request its ``invalid_input``, never the worker, its
other job or its secrets. So :class:`Preparer` hands each picture to a
process of its own:

* a **server** (:mod:`pipeline.api.prep_server`), started once with an
  environment that holds no credentials and no token, imports the decoders
  and the face detector, then forks one process per picture: no picture
  pays the interpreter's start, and no process sees two users' pictures;
* the forked process limits itself before it reads the picture (address
  space: :func:`memory_budget`; CPU seconds; no files, no core dumps),
  prepares it (:func:`pipeline.api.reference.prepare_reference`) and sends
  back its RGB pixels, which the worker checks field by field;
* the worker kills it at the deadline (``timeout_s``, from the moment it is
  handed the picture) and reports the picture ``invalid_input``; so it
  does when the process ran out of memory, of CPU time, or crashed.

Thread-safe: the worker's two slots prepare their pictures at once.
"""

from __future__ import annotations

import contextlib
import math
import os
import selectors
import signal
import socket
import subprocess  # nosec B404
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from PIL import Image

from pipeline.api import prep_wire as wire
from pipeline.api.errors import InvalidImageError, PipelineBrokenError, PipelineError
from pipeline.api.prep_wire import Figures, PrepConfig
from pipeline.api.reference import WORK_SIDE, InputLimits

BYTES_PER_PIXEL = 20
"""Address space a preparing process may add, per pixel of ``MAX_INPUT_PIXELS``."""
BASE_BYTES = 128 * 1024 * 1024
"""And beyond that, for the decoders' own tables and the encoder-sized pictures."""
START_TIMEOUT_S = 60.0
# Only what the server needs of the worker's environment: never AWS
# credentials, the token or any other secret the worker was given.
_KEPT = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")
# One thread per process: the server forks, and threads do not survive a fork.
_ONE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_CHUNK = 1 << 20
_STARTUP_LOG_BYTES = 2000


def memory_budget(max_pixels: int) -> int:
    """The address space a preparing process may add for pictures of `max_pixels`."""
    return BASE_BYTES + BYTES_PER_PIXEL * max_pixels


def server_environment() -> dict[str, str]:
    """The preparing server's whole environment: a few harmless names, the
    project on its path, one thread. Nothing secret is passed on."""
    env = {name: os.environ[name] for name in _KEPT if name in os.environ}
    env |= dict.fromkeys(_ONE_THREAD, "1")
    env["MALLOC_ARENA_MAX"] = "1"
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return env


@dataclass(frozen=True, slots=True)
class Preparation:
    """A prepared picture and what preparing it took."""

    image: Image.Image
    wall_s: float
    figures: Figures


class Preparer:
    """Prepares each picture in a limited process forked by a warm server.

    `limits` are the input rules, `side` the encoder's (``None``: the
    picture is checked and reduced only, see
    :func:`~pipeline.api.reference.prepare_reference`); past `timeout_s` a
    preparation is ``invalid_input``. Call :meth:`start` early (the server
    takes a second to warm), :meth:`close` at the end.
    """

    def __init__(
        self,
        limits: InputLimits,
        side: int | None,
        *,
        timeout_s: float = wire.DEFAULT_PREP_TIMEOUT_S,
        memory_bytes: int | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.config = PrepConfig(
            max_bytes=limits.max_bytes,
            max_pixels=limits.max_pixels,
            max_aspect=limits.max_aspect,
            side=side,
            cpu_s=math.ceil(timeout_s) + 1,
            memory_bytes=memory_bytes or memory_budget(limits.max_pixels),
        )
        self._lock = threading.Lock()  # one control message and its answer at a time
        self._server: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._log: IO[bytes] | None = None
        self._ready = False

    def start(self) -> None:
        """Start the server (without waiting for it to be warm)."""
        with self._lock:
            if self._server is None:
                self._spawn()

    def close(self) -> None:
        """End the server; a preparation still running is killed with it."""
        with self._lock:
            self._stop()

    def prepare(self, data: bytes) -> Preparation:
        """The picture of `data` prepared in a process of its own.

        Raises:
            InvalidImageError: the picture is refused, or preparing it ran
                past the deadline, out of memory or CPU time, or crashed.
            PipelineError: preparing failed for another reason (transient).
            PipelineBrokenError: the server cannot be started.
        """
        task, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with self._lock:
                pid = self._fork(theirs)
                server = self._server
            theirs.close()
            started = time.monotonic()
            try:
                reply, timed_out = _exchange(task, data, started + self.timeout_s, self._limit)
            finally:
                status = self._end(pid, server)
            wall = time.monotonic() - started
        finally:
            task.close()
            theirs.close()
        if timed_out:
            raise InvalidImageError(
                f"preparing the input picture took longer than {self.timeout_s:g} s"
            )
        return _result(reply, status, wall, self.config)

    @property
    def _limit(self) -> int:
        return wire.reply_limit(self.config, WORK_SIDE)

    # The server.

    def _spawn(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # The server's own start-up errors, for the message if it fails to start.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - kept for the server's life
        command = [sys.executable, "-s", "-P", "-W", "ignore", "-m", "pipeline.api.prep_server"]
        try:
            # Our own interpreter and module, with a list of arguments: no shell.
            self._server = subprocess.Popen(  # noqa: S603 # nosec B603
                [*command, str(theirs.fileno()), self.config.to_json()],
                pass_fds=(theirs.fileno(),),
                env=server_environment(),
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._log,
                start_new_session=True,  # a Ctrl-C at the worker's terminal is not for it
            )
        finally:
            theirs.close()
        self._control, self._ready = ours, False

    def _stop(self) -> None:
        if self._control is not None:
            self._control.close()  # the server ends on this
        if self._server is not None:
            try:
                self._server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._server.kill()
                self._server.wait()
        if self._log is not None:
            self._log.close()
        self._server = self._control = self._log = None

    def _ensure(self) -> socket.socket:
        """The control socket of a warm server, started again if it ended."""
        if self._server is not None and self._server.poll() is not None:
            self._stop()
        if self._server is None:
            self._spawn()
        control = self._control
        if control is None:
            raise PipelineBrokenError("the picture preparation server has no control socket")
        if not self._ready:
            control.settimeout(START_TIMEOUT_S)
            try:
                message = control.recv(wire.CONTROL_PACKET)
            except OSError:
                message = b""
            if message != wire.READY:
                raise PipelineBrokenError(
                    f"the picture preparation server did not start: {self._startup_log()}"
                )
            control.settimeout(None)
            self._ready = True
        return control

    def _startup_log(self) -> str:
        if self._log is None:
            return "no log"
        self._log.seek(0)
        text = self._log.read()[-_STARTUP_LOG_BYTES:].decode("utf-8", "replace").strip()
        return text or "no output"

    def _fork(self, task: socket.socket) -> int:
        """Have the server fork the process that prepares the picture of `task`."""
        for attempt in (1, 2):
            control = self._ensure()
            try:
                socket.send_fds(control, [wire.FORK], [task.fileno()])
                answer = control.recv(wire.CONTROL_PACKET)
            except OSError:
                answer = b""
            if answer[:1] == wire.FORKED and len(answer) == 1 + wire.PID.size:
                return int(wire.PID.unpack(answer[1:])[0])
            if answer[:1] == wire.FAILED:
                raise PipelineError(
                    f"a picture preparation process could not start: {answer[1:]!r}"
                )
            # The server ended (it was killed, or ran out of memory): once more.
            self._stop()
            if attempt == 2:
                break
        raise PipelineBrokenError("the picture preparation server keeps ending")

    def _end(self, pid: int, server: subprocess.Popen[bytes] | None) -> int | None:
        """Kill the process of `pid`, forked by `server`, if it still runs; its wait status."""
        with self._lock:
            control = self._control
            if control is None or self._server is not server or _ended(server):
                # Its server is gone, and with it the right to signal `pid`:
                # the process was reaped by someone else, its id free again.
                return None
            with contextlib.suppress(ProcessLookupError):
                # Safe: the server reaps only when asked, so `pid` is still ours.
                os.kill(pid, signal.SIGKILL)
            try:
                control.send(wire.REAP + wire.PID.pack(pid))
                answer = control.recv(wire.CONTROL_PACKET)
            except OSError:
                return None
        if answer[:1] != wire.REAPED or len(answer) != 1 + wire.PID.size:
            return None
        status = int(wire.PID.unpack(answer[1:])[0])
        return None if status < 0 else status


def _ended(server: subprocess.Popen[bytes] | None) -> bool:
    return server is None or server.poll() is not None


def _exchange(task: socket.socket, data: bytes, deadline: float, limit: int) -> tuple[bytes, bool]:
    """Send the picture, read the reply until the process closes its end; the
    reply and whether the deadline passed first."""
    task.setblocking(False)
    outgoing = memoryview(wire.LENGTH.pack(len(data)) + data)
    reply = bytearray()
    with selectors.DefaultSelector() as selector:
        selector.register(task, selectors.EVENT_READ | selectors.EVENT_WRITE)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return bytes(reply), True
            for _, events in selector.select(left):
                if events & selectors.EVENT_WRITE:
                    try:
                        sent = task.send(outgoing[:_CHUNK])
                    except (BrokenPipeError, ConnectionResetError):
                        sent = len(outgoing)  # it stopped reading: its reply says why
                    outgoing = outgoing[sent:]
                    if not outgoing:
                        selector.modify(task, selectors.EVENT_READ)
                if events & selectors.EVENT_READ:
                    try:
                        chunk = task.recv(_CHUNK)
                    except ConnectionResetError:
                        chunk = b""
                    if not chunk or len(reply) + len(chunk) > limit:
                        return bytes(reply + chunk), False
                    reply += chunk


def _result(reply: bytes, status: int | None, wall: float, config: PrepConfig) -> Preparation:
    kind, body = reply[:1], reply[1:]
    if kind == wire.OK and len(body) >= wire.PICTURE.size:
        width, height, peak, start, added, cpu_us = wire.PICTURE.unpack_from(body)
        pixels = body[wire.PICTURE.size :]
        longest = config.side or 2 * WORK_SIDE
        expected_square = config.side is None or width == height == config.side
        fits = 0 < width <= longest and 0 < height <= longest and expected_square
        if fits and len(pixels) == 3 * width * height:
            image = Image.frombytes("RGB", (width, height), pixels)
            return Preparation(image, wall, Figures(peak, start, added, cpu_us / 1e6))
        raise InvalidImageError("preparing the input picture gave a malformed result")
    if kind == wire.INVALID:
        raise InvalidImageError(_text(body))
    if kind == wire.ERROR:
        raise PipelineError(f"preparing the input picture failed: {_text(body)}")
    raise InvalidImageError(_why_ended(status, config))


def _why_ended(status: int | None, config: PrepConfig) -> str:
    """Why a preparing process ended without a reply."""
    if status is not None and os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        if number in (signal.SIGXCPU, signal.SIGKILL):
            return f"preparing the input picture used more than {config.cpu_s} s of CPU time"
        return f"the input picture's decoder crashed ({signal.Signals(number).name})"
    if status is not None and os.WIFEXITED(status):
        return f"preparing the input picture ended its process (status {os.WEXITSTATUS(status)})"
    return "preparing the input picture ended its process"


def _text(body: bytes) -> str:
    # From a process that decoded a stranger's file: printable text only, bounded.
    text = body[: wire.MAX_MESSAGE].decode("utf-8", "replace")
    return "".join(c if c.isprintable() else "?" for c in text)[:500]
