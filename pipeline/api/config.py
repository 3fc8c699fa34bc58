"""What the pipeline needs to build its generator, all of it local.

The consumer resolves remote sources (``s3://`` model folders, weights files,
LoRA and IP-Adapter weights) into local paths before building this, so the
pipeline never talks to AWS.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from pipeline.api.batch import DEFAULT_MAX_BATCH_PIXELS, MAX_SIDE, MIN_SIDE, SIDE_STEP
from pipeline.api.lora_files import StyleSlot

BUILTIN_TINY = "builtin:tiny"
BUILTIN_BLANK = "builtin:blank"
BUILTIN_MODELS = (BUILTIN_BLANK, BUILTIN_TINY)
BUILTIN_PREFIX = "builtin:"
# Host memory for style LoRAs: a rank-64 SDXL LoRA on the attention layers
# is about 177 MiB in half precision, rank 128 354 MiB (docs/operations.md,
# "Styles").
DEFAULT_STYLE_CACHE_BYTES = 2 * 1024**3

# The IP-Adapter weights a real model uses unless told otherwise.
IP_ADAPTER_PATH = "h94/IP-Adapter"
IP_ADAPTER_SUBFOLDER = "sdxl_models"
IP_ADAPTER_WEIGHT_NAME = "ip-adapter_sdxl.safetensors"

# Each set of allowed values is declared once, as a Literal type; the tuples
# beside them are read from it, and the service's settings use the types.
# Diffusers' own class names, so a recipe copied from a model card works as is.
Scheduler = Literal[
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler",
    "DDIMScheduler",
    "LCMScheduler",
    "TCDScheduler",
]
SCHEDULERS: tuple[str, ...] = get_args(Scheduler)
# Those with a Karras sigma schedule: "DPM++ 2M Karras" is
# DPMSolverMultistepScheduler with ``scheduler_karras``.
KARRAS_SCHEDULERS = ("EulerDiscreteScheduler", "DPMSolverMultistepScheduler")
TimestepSpacing = Literal["leading", "linspace", "trailing"]
TIMESTEP_SPACINGS: tuple[str, ...] = get_args(TimestepSpacing)
TorchCompileMode = Literal["default", "reduce-overhead", "max-autotune"]
TORCH_COMPILE_MODES: tuple[str, ...] = get_args(TorchCompileMode)
Device = Literal["cuda", "cpu"]
DEVICES: tuple[str, ...] = get_args(Device)
Dtype = Literal["bfloat16", "float16", "float32"]
DTYPES: tuple[str, ...] = get_args(Dtype)
# Pictures above SDXL's native 1024x1024 decode in tiles: the decoder's widest
# layers hold about 2 GiB per 1024x1024 picture, so a 2048x2048 one untiled
# would need four times that.
DEFAULT_VAE_TILING_PIXELS = 1024 * 1024


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    """Where the model comes from and how to run it.

    Attributes:
        model_path: a hub id (read from the local hub cache only), a local
            diffusers folder, ``builtin:tiny`` or ``builtin:blank``.
        weights_file: a local ``.safetensors`` file loaded over the base model:
            a UNet state dict, or a whole single-file SDXL checkpoint.
        ip_adapter_path: hub id or local folder of the IP-Adapter weights.
        image_encoder_path: local folder or hub id of the CLIP image encoder;
            ``None`` for the one beside the IP-Adapter weights.
        lora_path: a local LoRA ``.safetensors`` file fused at load, or ``None``.
        device: ``"cuda"``, ``"cpu"``, or ``None`` to pick CUDA when available.
        model_name: the name reported in completion events; ``None`` for
            ``model_path`` (the consumer sets the ``s3://`` source here).
        dtype: ``"bfloat16"``, ``"float16"`` or ``"float32"``; ``None`` picks
            bfloat16 on GPUs that support it, else float16, and float32 on a CPU.
        vae_path: a local folder or hub id of a replacement VAE, such as an
            fp16-safe one; ``None`` keeps the model's own.
        scheduler: one of :data:`SCHEDULERS` (diffusers' class name), built
            from the model's own scheduler configuration; ``None`` keeps the
            model's scheduler class.
        scheduler_karras: Karras sigmas (only for :data:`KARRAS_SCHEDULERS`).
        timestep_spacing: one of :data:`TIMESTEP_SPACINGS`, applied to the
            scheduler in use; ``"trailing"`` starts every run, however few its
            steps, at the last training timestep.
        torch_compile_mode: ``torch.compile``'s mode (one of
            :data:`TORCH_COMPILE_MODES`) when ``torch_compile`` is on; ``None``
            is torch's default.
        vae_tiling_pixels: decode in tiles when ``width * height`` exceeds
            this; ``0`` or ``None`` never tiles.
        subject_ip_adapter_weight_name: a second IP-Adapter weights file,
            beside ``ip_adapter_weight_name`` (same path and subfolder, and
            trained on the same image encoder, such as
            ``ip-adapter-plus-face_sdxl_vit-h.safetensors`` beside
            ``ip-adapter-plus_sdxl_vit-h.safetensors``), that subject jobs use
            instead; ``None``: both kinds use the one adapter. A real model only.
        torch_compile_backend: ``torch.compile``'s backend; ``None`` is
            inductor, on a GPU only. Another (``"eager"``, ``"aot_eager"``)
            compiles on a CPU too: tests and benchmarks count compilations
            with it without generating code. Not a setting of the service.
        style_slot: the UNet's LoRA slot for catalog styles (its rank and
            layers), hotswapped per job; ``None``: no slot (no style has a LoRA).
        style_loras: the catalog's LoRA files at start, ``(style, local path,
            digest)``: each is checked against the model when it loads and read
            into the host cache, as far as `style_cache_bytes` allows.
        style_cache_bytes: how many bytes of style LoRA weights the host
            memory keeps, least recently used first out.
        torch_compile_sizes: the picture sizes compiled for, as
            ``"WIDTHxHEIGHT,..."``; ``None`` for the native size alone. Each
            is warmed up; other sizes run uncompiled, never compiling in a job.
        torch_compile_vae: with ``torch_compile``, also compile the VAE
            decoder (for the same sizes, one picture at a time).
        torch_compile_regional: with ``torch_compile``, compile only the
            UNet's repeated transformer blocks, each once for every instance
            (``compile_repeated_blocks``): a start several times quicker, steps
            somewhat slower than the whole UNet compiled.
        max_batch_pixels: ``num_images * width * height`` of the largest
            request the service accepts (``MAX_BATCH_PIXELS``); on a GPU the
            load proves that it fits.
    """

    model_path: str
    weights_file: str | None = None
    enable_ip_adapter: bool = True
    ip_adapter_path: str = IP_ADAPTER_PATH
    ip_adapter_subfolder: str = IP_ADAPTER_SUBFOLDER
    ip_adapter_weight_name: str = IP_ADAPTER_WEIGHT_NAME
    image_encoder_path: str | None = None
    lora_path: str | None = None
    lora_scale: float = 1.0
    torch_compile: bool = False
    warmup: bool = True
    blank_latency_ms: int = 0
    device: str | None = None
    model_name: str | None = None
    dtype: str | None = None
    vae_path: str | None = None
    scheduler: str | None = None
    scheduler_karras: bool = False
    timestep_spacing: TimestepSpacing = "trailing"
    torch_compile_mode: str | None = None
    vae_tiling_pixels: int | None = DEFAULT_VAE_TILING_PIXELS
    subject_ip_adapter_weight_name: str | None = None
    torch_compile_backend: str | None = None
    style_slot: StyleSlot | None = None
    style_loras: tuple[tuple[str, str, str], ...] = ()
    style_cache_bytes: int = DEFAULT_STYLE_CACHE_BYTES
    torch_compile_sizes: str | None = None
    torch_compile_vae: bool = False
    torch_compile_regional: bool = False
    max_batch_pixels: int = DEFAULT_MAX_BATCH_PIXELS

    def __post_init__(self) -> None:
        check_scheduler(self.scheduler, karras=self.scheduler_karras)
        check_timestep_spacing(self.timestep_spacing)
        check_torch_compile_mode(self.torch_compile_mode)
        if self.vae_tiling_pixels is not None and self.vae_tiling_pixels < 0:
            raise ValueError(f"vae_tiling_pixels must be 0 or more, got {self.vae_tiling_pixels}")
        compile_sizes(self.torch_compile_sizes)
        if self.max_batch_pixels < MIN_SIDE * MIN_SIDE:
            raise ValueError(f"max_batch_pixels must be at least {MIN_SIDE * MIN_SIDE}")

    @property
    def tiling_threshold(self) -> int | None:
        """Pixels above which a picture decodes in tiles; ``None`` never."""
        return self.vae_tiling_pixels or None


def needs_ip_adapter_files(model_path: str) -> bool:
    """Whether a model at `model_path` reads IP-Adapter weights from files
    (the built-ins make their own, or use none)."""
    return model_path not in BUILTIN_MODELS


def check_scheduler(name: str | None, *, karras: bool = False) -> str | None:
    """`name` if it is one of :data:`SCHEDULERS` (or ``None``); else a one-line ValueError.

    ``karras`` is refused unless the scheduler has Karras sigmas; with
    ``None`` (the model's own scheduler) it is checked at load.
    """
    if name is not None and name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    if karras and name is not None and name not in KARRAS_SCHEDULERS:
        raise ValueError(f"{name} has no Karras sigmas; only {', '.join(KARRAS_SCHEDULERS)} do")
    return name


def compile_sizes(value: str | None) -> tuple[tuple[int, int], ...]:
    """The (width, height) pairs of a ``"WIDTHxHEIGHT,..."`` list; ``()`` for none.

    Each side must be one a request may ask for (a multiple of 64 from 64
    to 2048); anything else is a one-line ValueError.
    """
    sizes: list[tuple[int, int]] = []
    for item in (value or "").split(","):
        if not item.strip():
            continue
        width, _, height = item.strip().lower().partition("x")
        try:
            size = (int(width), int(height))
        except ValueError:
            raise ValueError(f"compile size {item.strip()!r} is not WIDTHxHEIGHT") from None
        if not all(MIN_SIDE <= side <= MAX_SIDE and side % SIDE_STEP == 0 for side in size):
            raise ValueError(
                f"compile size {item.strip()!r}: each side a multiple of {SIDE_STEP} "
                f"from {MIN_SIDE} to {MAX_SIDE}"
            )
        if size not in sizes:
            sizes.append(size)
    return tuple(sizes)


def check_timestep_spacing(spacing: str) -> str:
    """`spacing` if it is one of :data:`TIMESTEP_SPACINGS`; else a one-line ValueError."""
    if spacing not in TIMESTEP_SPACINGS:
        raise ValueError(
            f"unknown timestep spacing {spacing!r}; choose one of {', '.join(TIMESTEP_SPACINGS)}"
        )
    return spacing


def check_torch_compile_mode(mode: str | None) -> str | None:
    """`mode` if it is one of :data:`TORCH_COMPILE_MODES` (or ``None``); else a ValueError."""
    if mode is not None and mode not in TORCH_COMPILE_MODES:
        raise ValueError(
            f"unknown torch.compile mode {mode!r}; choose one of {', '.join(TORCH_COMPILE_MODES)}"
        )
    return mode


def hub_cache_dir() -> Path:
    """The local Hugging Face hub cache, by the variables ``huggingface_hub``
    reads, read now (its own constants are fixed when it is imported)."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "huggingface" / "hub"


def cached_snapshot(repo_id: str, marker: str) -> Path | None:
    """The hub cache's snapshot folder of `repo_id` that holds file `marker`
    (e.g. ``model_index.json``), asked of ``huggingface_hub`` without the
    network; ``None`` when it is not cached or `repo_id` is no repo id."""
    import huggingface_hub  # here: the check is rare, the import not free

    try:
        found = huggingface_hub.try_to_load_from_cache(repo_id, marker, cache_dir=hub_cache_dir())
    except ValueError:  # not a valid repo id
        return None
    return Path(found).parent if isinstance(found, str) else None


def in_hub_cache(repo_id: str) -> bool:
    """Whether the hub cache holds a diffusers model `repo_id` (its ``model_index.json``)."""
    return cached_snapshot(repo_id, "model_index.json") is not None


# What every generator but builtin:blank, and the safety checker, are built
# with (import names). The project's `gpu` extra installs them; an operator's
# install without it has the commands and the consumer, not the pipeline.
MODEL_LIBRARIES = ("torch", "diffusers", "transformers", "huggingface_hub", "safetensors", "cv2")
PIPELINE_EXTRA = "gpu"


def missing_model_libraries() -> list[str]:
    """The libraries of :data:`MODEL_LIBRARIES` this environment lacks (none imported)."""
    return [name for name in MODEL_LIBRARIES if importlib.util.find_spec(name) is None]
