"""Putting a loaded pipeline on its device, tuned for inference there."""

from __future__ import annotations

import structlog
import torch

from pipeline.engine.runtime.compiling import Compiled, CompileOptions, compile_pipeline
from pipeline.engine.untyped import SDXLPipeline

log = structlog.get_logger(__name__)

_FORCE_UPCAST = "force_upcast"


def place(
    pipe: SDXLPipeline,
    device: torch.device,
    dtype: torch.dtype,
    *,
    compile_unet: bool,
    compile_mode: str | None = None,
    compile_backend: str | None = None,
    compile_vae: bool = False,
    compile_regional: bool = False,
) -> Compiled | None:
    """Move `pipe` to `device` and apply the GPU settings; the compiled parts, if any.

    The VAE is put in the precision it decodes in for good (:func:`vae_dtype`).
    On a GPU: channels-last memory for the UNet's convolutions (and for a
    compiled VAE decoder, whose compiler folds the layout changes into its
    kernels; an eager one would copy every activation at each GroupNorm),
    and optionally a compiled UNet (``compile_mode`` is ``torch.compile``'s
    mode; ``None`` for its default; see :mod:`pipeline.engine.runtime.compiling`).
    A `compile_backend` other than inductor (such as ``"eager"``, which
    traces without generating code) also compiles on a CPU, for tests and
    benchmarks of compilation. Attention already runs through PyTorch's SDPA
    (diffusers' default processors, the IP-Adapter's included), so the
    processors are left as they are: replacing them would drop the
    IP-Adapter's.
    """
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    _place_vae(pipe, dtype)
    options = CompileOptions(
        mode=compile_mode, backend=compile_backend, vae=compile_vae, regional=compile_regional
    )
    if device.type != "cuda":
        if compile_unet and compile_backend is not None:
            return compile_pipeline(pipe, options)
        if compile_unet:
            log.info("torch_compile_skipped", reason="only compiled on a GPU", device=str(device))
        return None
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    pipe.unet.to(memory_format=torch.channels_last)
    if compile_unet and compile_vae:
        pipe.vae.to(memory_format=torch.channels_last)
    if compile_unet:
        return compile_pipeline(pipe, options)
    return None


def vae_dtype(vae_config: object, dtype: torch.dtype) -> torch.dtype:
    """The precision the VAE lives and decodes in for a pipeline in `dtype`.

    SDXL's own VAE overflows in float16 (its config says ``force_upcast``),
    so with float16 it stays in float32 for good (0.16 GiB more than in half
    precision), where diffusers would cast it up and back on every job; an
    fp16-safe VAE (``force_upcast: false``, through ``VAE_PATH``) decodes in
    float16. bfloat16 has float32's range and never overflows.
    """
    if dtype == torch.float16 and bool(getattr(vae_config, _FORCE_UPCAST, False)):
        return torch.float32
    return dtype


def _place_vae(pipe: SDXLPipeline, dtype: torch.dtype) -> None:
    chosen = vae_dtype(pipe.vae.config, dtype)
    if pipe.vae.dtype != chosen:
        pipe.vae.to(dtype=chosen)
    log.info("vae_precision", dtype=str(chosen).removeprefix("torch."))


def set_vae_tiling(pipe: SDXLPipeline, pixels: int, threshold: int | None) -> bool:
    """Tile the VAE decode of this call when `pixels` exceeds `threshold`; whether it does.

    Decided per call, since one worker draws many sizes: tiling bounds the
    decode's memory at large sizes but costs time (and blends tile seams) at
    small ones. ``None`` never tiles.
    """
    tiled = threshold is not None and pixels > threshold
    if tiled != bool(getattr(pipe.vae, "use_tiling", False)):
        if tiled:
            pipe.vae.enable_tiling()
        else:
            pipe.vae.disable_tiling()
    return tiled
