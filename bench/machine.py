"""A description of the machine the figures were measured on."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def describe() -> dict[str, Any]:
    """CPU, cores, memory, OS, Python, moto, and how loaded the machine was."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "moto": metadata.version("moto"),
        "pillow": metadata.version("pillow"),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def summary(machine: dict[str, Any]) -> str:
    """One line: ``2 cores (Intel ...), 23.4 GiB, Linux-..., Python 3.11.x``."""
    return (
        f"{machine['cores']} cores ({machine['cpu']}), {machine['memory_gib']} GiB, "
        f"{machine['os']}, Python {machine['python']}, moto {machine['moto']}"
    )
