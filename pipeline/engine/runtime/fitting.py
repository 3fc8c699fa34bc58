"""Proving at start that the largest request the settings allow fits the GPU's memory.

A request that never fits would otherwise be found by a user, and run out
of memory worker after worker. So after the warm-up, with everything that
stays resident loaded (the weights, the IP-Adapter copies, the safety
checker, compiled graphs), the generator draws one step of each of the
largest requests (:func:`pipeline.api.batch.largest_requests`: the most
native-size pictures, and the largest picture with its tiled decode) and
this module reads the allocator's reserved peak. The request fits when it
ran and its peak, with what the process holds outside the allocator (the
CUDA context, libraries' workspaces), leaves :data:`HEADROOM` of the GPU
free; else the worker refuses to start with the figure and the settings to
lower.

On a CPU nothing is measured (:func:`memory_probe` is ``None``); the tests
hand the generator a probe of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog
import torch

from pipeline.api.errors import StartRefusedError

log = structlog.get_logger(__name__)

GiB = 1024**3
HEADROOM = 0.03
"""Share of the GPU left free above the measured peak: the allocator's
fragmentation over a long run, and graphs of shapes the probe did not meet."""
SETTINGS_TO_LOWER = (
    "MAX_BATCH_PIXELS (fewer or smaller pictures per request), VAE_TILING_PIXELS "
    "(tile smaller decodes), or the resident models (a smaller IP-Adapter image "
    "encoder, SAFETY_CHECKER_PATH)"
)


class MemoryProbe(Protocol):
    """What fitting needs to know of a GPU's memory, in bytes."""

    def reset_peak(self) -> None:
        """Start a new peak measurement."""

    def peak_reserved(self) -> int:
        """The most the allocator held since the last reset."""

    def outside_allocator(self) -> int:
        """Memory of the GPU in use that the allocator does not hold (context, other users)."""

    def total(self) -> int:
        """The GPU's memory."""


class CudaMemory:
    """:class:`MemoryProbe` of a CUDA device."""

    def __init__(self, device: torch.device) -> None:
        self._device = device

    def reset_peak(self) -> None:
        """Reset the allocator's peaks (the reserved one among them)."""
        torch.cuda.synchronize(self._device)
        torch.cuda.reset_peak_memory_stats(self._device)

    def peak_reserved(self) -> int:
        """``max_memory_reserved`` since the reset, once the device is idle."""
        torch.cuda.synchronize(self._device)
        return int(torch.cuda.max_memory_reserved(self._device))

    def outside_allocator(self) -> int:
        """Used memory (by the driver's count) beyond what the allocator reserves now."""
        free, total = torch.cuda.mem_get_info(self._device)
        return max(0, int(total - free) - int(torch.cuda.memory_reserved(self._device)))

    def total(self) -> int:
        """The device's memory, by the driver's count."""
        return int(torch.cuda.mem_get_info(self._device)[1])


def memory_probe(device: torch.device) -> MemoryProbe | None:
    """The probe of `device`'s memory; ``None`` where there is no GPU memory to prove."""
    return CudaMemory(device) if device.type == "cuda" else None


@dataclass(frozen=True)
class Fit:
    """One largest request's measurement."""

    pictures: int
    width: int
    height: int
    peak_bytes: int
    total_bytes: int

    @property
    def name(self) -> str:
        """``"4 x 1024x1024"``."""
        return f"{self.pictures} x {self.width}x{self.height}"

    def figures(self) -> dict[str, object]:
        """For the log."""
        return {
            "request": self.name,
            "peak_reserved_gib": round(self.peak_bytes / GiB, 2),
            "gpu_gib": round(self.total_bytes / GiB, 2),
        }


def prove_fit(
    probe: MemoryProbe,
    cases: list[tuple[int, int, int]],
    draw_one_step: Callable[[int, int, int], None],
) -> list[Fit]:
    """Draw one step of each case (pictures, width, height); refuse when one does not fit.

    Raises :class:`StartRefusedError` naming the request, its reserved peak,
    the GPU's memory and the settings to lower.
    """
    fits = []
    for pictures, width, height in cases:
        probe.reset_peak()
        try:
            draw_one_step(pictures, width, height)
        except torch.OutOfMemoryError:
            fit = Fit(pictures, width, height, probe.peak_reserved(), probe.total())
            raise StartRefusedError(
                f"the largest request these settings allow ({fit.name}) does not fit this "
                f"GPU: it ran out of memory with {fit.peak_bytes / GiB:.1f} GiB reserved of "
                f"{fit.total_bytes / GiB:.1f} GiB; lower {SETTINGS_TO_LOWER}"
            ) from None
        fit = Fit(pictures, width, height, probe.peak_reserved(), probe.total())
        needed = fit.peak_bytes + probe.outside_allocator()
        allowed = int(fit.total_bytes * (1 - HEADROOM))
        if needed > allowed:
            raise StartRefusedError(
                f"the largest request these settings allow ({fit.name}) does not fit this "
                f"GPU: it needs {needed / GiB:.1f} GiB (a reserved peak of "
                f"{fit.peak_bytes / GiB:.1f} GiB with everything resident) of the "
                f"{allowed / GiB:.1f} GiB usable of {fit.total_bytes / GiB:.1f} GiB; "
                f"lower {SETTINGS_TO_LOWER}"
            )
        log.info("largest_request_fits", **fit.figures())
        fits.append(fit)
    return fits
