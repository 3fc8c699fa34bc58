"""The preparing server: a warm process that forks one limited process per picture.

Started by :class:`pipeline.api.preparer.Preparer` as
``python -m pipeline.api.prep_server CONTROL_FD CONFIG_JSON`` with an
environment of its own (no AWS credentials, no token). It imports the
decoders and loads the face detector once, then waits on its control
socket. For each picture it forks: the new process sets its limits
(address space, CPU seconds, no files, no core dumps), prepares the one
picture it is handed (:func:`pipeline.api.reference.prepare_reference`),
replies and exits. So a picture never shares a process with another
user's, nor with the worker's credentials, and no process pays the
interpreter's start. The server ends when the worker closes the control
socket. No torch is imported here.
"""

from __future__ import annotations

import contextlib
import io
import os
import resource
import signal
import socket
import sys
from pathlib import Path

from PIL import Image

from pipeline.api import prep_wire as wire
from pipeline.api.errors import InvalidImageError
from pipeline.api.prep_wire import Figures, PrepConfig
from pipeline.api.reference import InputLimits, prepare_reference

# Samples every decoder is warmed with: each format's plug-in and the face
# detector load once, in the server, not once per picture.
_WARM_FORMATS: tuple[tuple[str, dict[str, bool]], ...] = (
    ("PNG", {}),
    ("JPEG", {"progressive": True}),
    ("WEBP", {"lossless": True}),
)


def _warm(config: PrepConfig) -> None:
    import cv2

    cv2.setNumThreads(1)  # one thread: the server forks, and threads do not survive a fork
    # Limits of their own: the samples are ours, whatever a deployment allows.
    limits = InputLimits(max_bytes=1 << 20, max_pixels=1 << 20, max_aspect=8.0)
    for fmt, options in _WARM_FORMATS:
        buffer = io.BytesIO()
        Image.new("RGB", (64, 48), (200, 120, 80)).save(buffer, format=fmt, **options)
        prepare_reference(buffer.getvalue(), limits, config.side or 224)


def _status_kib(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    return 0


def _limit(config: PrepConfig) -> int:
    """Set the limits of a preparing process, before it reads its picture; its
    address space (KiB) as it starts."""
    size_kib = _status_kib("VmSize")
    resource.setrlimit(resource.RLIMIT_AS, (size_kib * 1024 + config.memory_bytes,) * 2)
    # SIGXCPU at the soft limit, SIGKILL a second later: a backstop for the
    # worker's own deadline, should the worker be gone.
    resource.setrlimit(resource.RLIMIT_CPU, (config.cpu_s, config.cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # The peak resident memory from here on is this picture's (Linux 4.0+);
    # only a figure, so a kernel without it changes nothing else.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return size_kib


def _read_task(task: socket.socket, max_bytes: int) -> bytes:
    header = _receive(task, wire.LENGTH.size)
    (length,) = wire.LENGTH.unpack(header)
    if length > max_bytes:
        raise InvalidImageError(
            f"input image is {length} bytes, more than the limit of {max_bytes}"
        )
    return _receive(task, length)


def _receive(task: socket.socket, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = task.recv(min(count - len(data), 1 << 20))
        if not chunk:
            raise EOFError("the worker closed the task")
        data += chunk
    return bytes(data)


def _serve(task: socket.socket, config: PrepConfig) -> None:
    """Prepare one picture in this (forked, limited) process and reply."""
    try:
        # Limits that cannot be set are the worker's trouble (an ERROR reply,
        # transient), never a picture prepared without them.
        size_kib = _limit(config)
        start_kib = _status_kib("VmRSS")
        data = _read_task(task, config.max_bytes)
        limits = InputLimits(config.max_bytes, config.max_pixels, config.max_aspect)
        image = prepare_reference(data, limits, config.side)
        del data
        pixels = image.tobytes()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        added_kib = _status_kib("VmPeak") - size_kib
        figures = Figures(
            _status_kib("VmHWM"), start_kib, added_kib, usage.ru_utime + usage.ru_stime
        )
        reply = wire.picture_reply(image.width, image.height, figures, pixels)
    except InvalidImageError as error:
        reply = wire.message_reply(wire.INVALID, str(error))
    except MemoryError:
        reply = wire.message_reply(
            wire.INVALID, "input image needs more memory to prepare than a preparation may use"
        )
    except Exception as error:  # reported to the worker, which decides
        reply = wire.message_reply(wire.ERROR, f"{type(error).__name__}: {error}")
    task.sendall(reply)


def _fork(control: socket.socket, task: socket.socket, config: PrepConfig) -> int | None:
    """Fork the process that prepares the picture of `task`; its id, told to the worker."""
    try:
        pid = os.fork()
    except OSError as error:
        task.close()
        control.send(wire.FAILED + str(error).encode()[: wire.CONTROL_PACKET])
        return None
    if pid == 0:
        status = 0
        try:
            control.close()
            # Its stderr goes nowhere: no file may grow (RLIMIT_FSIZE), and a
            # stranger's picture has nothing to say to the worker's logs.
            os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
            _serve(task, config)
        except BaseException:
            status = 1
        finally:
            # No clean-up of the server's state: this process only ever
            # prepares its one picture.
            os._exit(status)
    task.close()
    control.send(wire.FORKED + wire.PID.pack(pid))
    return pid


def serve(control: socket.socket, config: PrepConfig) -> None:
    """Answer the worker's control messages until it closes the socket."""
    _warm(config)
    control.send(wire.READY)
    children: set[int] = set()
    try:
        while True:
            message, fds, _, _ = socket.recv_fds(control, wire.CONTROL_PACKET, 1)
            if not message:
                return
            kind, rest = message[:1], message[1:]
            if kind == wire.FORK and fds:
                pid = _fork(control, socket.socket(fileno=fds[0]), config)
                if pid is not None:
                    children.add(pid)
            elif kind == wire.REAP and len(rest) == wire.PID.size:
                (pid,) = wire.PID.unpack(rest)
                # Only the server reaps, and only when asked: until then a
                # process id stays its child's, so the worker's kill of it
                # can never reach another process.
                status = os.waitpid(pid, 0)[1] if pid in children else -1
                children.discard(pid)
                control.send(wire.REAPED + wire.PID.pack(status))
    finally:
        for pid in children:
            os.kill(pid, signal.SIGKILL)


def main(argv: list[str]) -> int:
    """``CONTROL_FD CONFIG_JSON``: serve until the worker closes the socket."""
    control = socket.socket(fileno=int(argv[0]))
    config = PrepConfig.from_json(argv[1])
    # The worker decides when this process ends; a Ctrl-C meant for the
    # worker's terminal is not for it (it runs in a session of its own).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(control, config)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
