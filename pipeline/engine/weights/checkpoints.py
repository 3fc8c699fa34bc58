"""Fine-tuned weights in one ``.safetensors`` file, told apart by their keys.

Two kinds are accepted: a UNet state dict in diffusers' layout (what a
fine-tuning script saves with ``unet.state_dict()``), loaded over the base
model's UNet; and a whole single-file SDXL checkpoint (original layout:
``model.diffusion_model.*``, ``first_stage_model.*``, ``conditioner.*``),
loaded with the base model's configuration.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from pipeline.api.errors import ModelLoadError
from pipeline.engine.untyped import SDXLPipeline, diffusers, diffusers_dtype

_UNET_MARKERS = ("conv_in.weight", "time_embedding.linear_1.weight")
_CHECKPOINT_PREFIXES = ("model.diffusion_model.", "first_stage_model.", "conditioner.embedders.")
_UNET_PREFIX = "unet."


class WeightsKind(enum.Enum):
    """What a weights file holds."""

    UNET = "unet"
    CHECKPOINT = "checkpoint"


def classify_keys(keys: Iterable[str]) -> WeightsKind:
    """Tell a UNet state dict from a whole SDXL checkpoint by its tensor names."""
    names = set(keys)
    stripped = {name.removeprefix(_UNET_PREFIX) for name in names}
    if all(marker in stripped for marker in _UNET_MARKERS):
        return WeightsKind.UNET
    if all(any(name.startswith(p) for name in names) for p in _CHECKPOINT_PREFIXES):
        return WeightsKind.CHECKPOINT
    sample = ", ".join(sorted(names)[:5]) or "none"
    raise ModelLoadError(
        "weights file holds neither a diffusers UNet state dict nor a single-file SDXL "
        f"checkpoint (first tensor names: {sample})"
    )


def weights_kind(path: str | Path) -> WeightsKind:
    """The kind of weights in the ``.safetensors`` file at `path` (reads only its header)."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            keys = list(handle.keys())
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:
        raise ModelLoadError(f"cannot read weights file {path}: {error}") from error
    return classify_keys(keys)


def load_unet_weights(pipe: SDXLPipeline, path: str | Path) -> None:
    """Load a UNet state dict over `pipe`'s UNet; every tensor must fit."""
    try:
        state = load_file(str(path), device="cpu")
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:
        raise ModelLoadError(f"cannot read weights file {path}: {error}") from error
    if all(name.startswith(_UNET_PREFIX) for name in state):
        state = {name.removeprefix(_UNET_PREFIX): tensor for name, tensor in state.items()}
    try:
        pipe.unet.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ModelLoadError(f"weights file {path} does not fit the base UNet: {error}") from error


def load_checkpoint(path: str | Path, base: str, dtype: torch.dtype) -> SDXLPipeline:
    """A pipeline from a whole single-file checkpoint, configured like `base`.

    `base` (a local folder or a cached hub id) supplies the component
    configurations and tokenizers, so nothing is fetched.
    """
    try:
        pipe = diffusers.StableDiffusionXLPipeline.from_single_file(
            str(path), config=base, local_files_only=True, **diffusers_dtype(dtype)
        )
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise ModelLoadError(
            f"cannot load checkpoint {path} with {base}'s config: {error}"
        ) from error
    return pipe
