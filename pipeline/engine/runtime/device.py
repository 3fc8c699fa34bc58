"""Which device and precision to run on, and what to do with GPU memory."""

from __future__ import annotations

import gc

import torch

from pipeline.api.errors import ModelLoadError

_DTYPES = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "float32": torch.float32,
    "fp32": torch.float32,
}


def choose_device(requested: str | None) -> torch.device:
    """`requested`, or CUDA when available, else the CPU."""
    if requested:
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError(f"device {requested!r} was asked for but no CUDA GPU is visible")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
    """Drop what Python still references and return cached GPU blocks."""
    gc.collect()
    if device.type == "cuda":
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
