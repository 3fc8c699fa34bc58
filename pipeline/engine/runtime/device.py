"""Which device and precision to run on, and what to do with GPU memory."""

from __future__ import annotations

import gc
import warnings
from pathlib import Path

import torch

from pipeline.api.errors import ModelLoadError, StartRefusedError

_DTYPES = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "float32": torch.float32,
    "fp32": torch.float32,
}
# The device node the NVIDIA container runtime passes into a container that
# was given a GPU (``--gpus``); without it no driver can be reached at all.
NVIDIA_CONTROL_DEVICE = Path("/dev/nvidiactl")


def choose_device(requested: str | None, *, needs_gpu: bool = False) -> torch.device:
    """`requested`, or CUDA when available, else the CPU.

    With `needs_gpu` (a real model: on a CPU every job would run into its
    deadline), no request and no visible GPU is refused with
    :class:`StartRefusedError`, whose message names the likely cause; only
    an explicit ``DEVICE=cpu`` runs such a model on the CPU.
    """
    if requested:
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError(f"device {requested!r} was asked for but no CUDA GPU is visible")
        return device
    available, why = cuda_visible()
    if available:
        return torch.device("cuda")
    if needs_gpu:
        raise StartRefusedError(
            f"DEVICE is not set and no CUDA GPU is visible: {why}; a real model needs "
            "a GPU (on a CPU every job runs into its deadline); set DEVICE=cpu to run "
            "it on the CPU anyway"
        )
    return torch.device("cpu")


def cuda_visible() -> tuple[bool, str]:
    """Whether CUDA can be used, and if not the likely reason, in words.

    torch says why CUDA failed to start (a driver too old for its CUDA, say)
    only in a warning from :func:`torch.cuda.is_available`; it is caught here
    and quoted.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    if available:
        return True, ""
    if torch.version.cuda is None:
        return False, f"this torch ({torch.__version__}) is a CPU-only build"
    said = " ".join(str(caught[-1].message).split())[:300] if caught else ""
    if not NVIDIA_CONTROL_DEVICE.exists():
        return False, (
            f"{NVIDIA_CONTROL_DEVICE} is missing, so no GPU was passed in: start the "
            "container with --gpus all (or the NVIDIA container runtime)"
        )
    driver = said or "CUDA did not start"
    return False, (
        f"a GPU is passed in but {driver}: the NVIDIA driver must support CUDA "
        f"{torch.version.cuda} (see nvidia-smi)"
    )


def choose_dtype(device: torch.device, requested: str | None) -> torch.dtype:
    """The precision for `device`: `requested`, else half on a GPU, float32 on a CPU.

    bfloat16 is preferred over float16 where the GPU supports it: it has
    float32's range, so neither the UNet nor the VAE can overflow.
    """
    if requested:
        try:
            return _DTYPES[requested.lower()]
        except KeyError:
            known = ", ".join(sorted(_DTYPES))
            raise ModelLoadError(f"unknown dtype {requested!r}; one of: {known}") from None
    if device.type != "cuda":
        return torch.float32
    # Emulated bfloat16 (pre-Ampere GPUs) runs far slower than float16.
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.bfloat16 if native else torch.float16


def free_memory(device: torch.device) -> None:
    """Drop what Python still references and give cached GPU memory back.

    CUDA graphs (``reduce-overhead`` and ``max-autotune``) keep their memory
    in private pools that ``empty_cache`` cannot touch; the graphs are
    dropped first (a later call of a compiled function records its graph
    again: a replay's worth of time, no compilation), so their pools are
    freed too. Call it on the thread that runs the compiled functions: the
    graphs are kept per thread.
    """
    gc.collect()
    if device.type == "cuda":
        from torch._inductor import cudagraph_trees

        cudagraph_trees.reset_cudagraph_trees()
        gc.collect()
        torch.cuda.empty_cache()


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory measurement on a CUDA device."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory allocated by tensors on a CUDA device since the last reset."""
    if device.type != "cuda":
        return 0
    return int(torch.cuda.max_memory_allocated(device))


def peak_reserved_bytes(device: torch.device) -> int:
    """Peak memory the allocator reserved on a CUDA device since the last reset."""
    if device.type != "cuda":
        return 0
    return int(torch.cuda.max_memory_reserved(device))
