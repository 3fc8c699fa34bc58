"""Putting a loaded pipeline on its device, tuned for inference there."""

from __future__ import annotations

import structlog
import torch

from pipeline.engine.runtime.compiling import compile_for_every_shape
from pipeline.engine.untyped import SDXLPipeline

log = structlog.get_logger(__name__)


def place(
    pipe: SDXLPipeline,
    device: torch.device,
    dtype: torch.dtype,
    *,
    compile_unet: bool,
    compile_mode: str | None = None,
    compile_backend: str | None = None,
) -> None:
    """Move `pipe` to `device` and apply the GPU settings.

    On a GPU: channels-last memory for the convolutions, a VAE that cannot
    overflow, and optionally a compiled UNet (``compile_mode``
    is ``torch.compile``'s mode; ``None`` for its default; see
    :mod:`pipeline.engine.runtime.compiling`). A `compile_backend` other than inductor (such
    as ``"eager"``, which traces without generating code) also compiles on a
    CPU, for tests and benchmarks of compilation. Attention already runs through
    PyTorch's SDPA (diffusers' default processors, the IP-Adapter's included),
    so the processors are left as they are: replacing them would drop the
    IP-Adapter's.
    """
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    if device.type != "cuda":
        if compile_unet and compile_backend is not None:
            compile_for_every_shape(pipe, compile_mode, compile_backend)
        elif compile_unet:
            log.info("torch_compile_skipped", reason="only compiled on a GPU", device=str(device))
        return
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    pipe.unet.to(memory_format=torch.channels_last)
    pipe.vae.to(memory_format=torch.channels_last)
    _guard_vae(pipe, dtype)
    if compile_unet:
        compile_for_every_shape(pipe, compile_mode, compile_backend)


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


def _guard_vae(pipe: SDXLPipeline, dtype: torch.dtype) -> None:
    """Keep the VAE decode finite in half precision.

    bfloat16 has float32's range, so it never overflows. SDXL's VAE does
    overflow in float16; unless the VAE is an fp16-safe one (its config says
    ``force_upcast: false``), the pipeline must upcast it to float32 to decode,
    which diffusers does when ``force_upcast`` is set.
    """
    if dtype == torch.float16:
        if pipe.vae.config.force_upcast:
            log.info("vae_upcast", reason="float16 SDXL VAE overflows; decoding in float32")
        return
    # Only float16 is ever upcast by the pipeline; say so for the log reader.
    log.info("vae_precision", dtype=str(dtype).removeprefix("torch."))
