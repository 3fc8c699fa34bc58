"""Small terminal helpers: a spinner that only spins for people, durations, and
AWS errors in one line."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import AsyncIterator
from typing import TextIO

FRAMES = "|/-\\"
FRAME_S = 0.1


async def _spin(stream: TextIO, label: str) -> None:
    started = time.monotonic()
    frame = 0
    while True:
        elapsed = time.monotonic() - started
        stream.write(f"\r{FRAMES[frame % len(FRAMES)]} {label} ({elapsed:.0f}s)")
        stream.flush()
        frame += 1
        await asyncio.sleep(FRAME_S)


@contextlib.asynccontextmanager
async def spinner(stream: TextIO, label: str) -> AsyncIterator[None]:
    """Show `label` with a spinner on `stream` while the block runs, on a TTY only.

    Logs and pipes get nothing: a spinner there is only noise.
    """
    if not stream.isatty():
        yield
        return
    task = asyncio.create_task(_spin(stream, label))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        stream.write("\r\x1b[2K")
        stream.flush()


def duration(seconds: float | None) -> str:
    """``45s``, ``12m03s``, ``5h07m`` or ``3d04h``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


# One line of an error is enough for a person; the rest goes to a debugger.
MAX_ERROR_LINE = 300
_HTML = re.compile(r"<\s*(!doctype|html|head|body|title|h1)\b", re.I)


def endpoint_of(service: str) -> str:
    """The endpoint a command talks to for `service`, as the AWS chain sets it."""
    url = os.environ.get(f"AWS_ENDPOINT_URL_{service.upper()}") or os.environ.get(
        "AWS_ENDPOINT_URL"
    )
    return url or f"AWS {service.upper()} ({os.environ.get('AWS_REGION', 'us-east-1')})"


def _flat(text: str) -> str:
    if _HTML.search(text):
        # A proxy's or web server's error page, not an AWS answer: never print it.
        return "the endpoint answered with a web page, not an AWS response"
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_ERROR_LINE else flat[: MAX_ERROR_LINE - 3] + "..."


def aws_error_line(command: str, error: Exception, service: str) -> str:
    """One line for an AWS call that failed: the endpoint, and what it said.

    ``illustrator dlq: cannot reach http://127.0.0.1:1/ (EndpointConnectionError)``;
    ``illustrator dlq: http://...: GetQueueAttributes: 502: Bad Gateway``.
    """
    name = type(error).__name__
    kwargs = getattr(error, "kwargs", None)
    reached = kwargs.get("endpoint_url") if isinstance(kwargs, dict) else None
    if reached and name.endswith(("ConnectionError", "TimeoutError", "ClosedError")):
        return f"{command}: cannot reach {reached} ({name})"
    endpoint = reached or endpoint_of(service)
    response = getattr(error, "response", None)
    if isinstance(response, dict) and isinstance(response.get("Error"), dict):
        details = response["Error"]
        code = str(
            details.get("Code") or response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        )
        message = _flat(str(details.get("Message") or ""))
        operation = getattr(error, "operation_name", "the call")
        return f"{command}: {endpoint}: {operation}: {code}: {message}".rstrip(": ")
    return f"{command}: {endpoint}: {_flat(str(error))} ({name})"
