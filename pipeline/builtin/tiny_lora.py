"""LoRA files for ``builtin:tiny``'s UNet, made in code (tests, benchmarks, the sandbox).

peft builds the adapter on the tiny UNet with random A and B matrices (peft
would start B at zero), so the LoRA changes the pictures; diffusers writes
it in its own file format, as its training scripts do.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.builtin.tiny import build_tiny
from pipeline.engine.untyped import diffusers

ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")


def save_tiny_lora(
    path: Path,
    seed: int = 7,
    *,
    rank: int = 4,
    alpha: int | None = None,
    targets: tuple[str, ...] = ATTENTION,
    text_encoder: bool = False,
) -> Path:
    """A LoRA of `rank` on the tiny UNet's layers `targets` (peft's names) at `path`.

    `alpha` (default: the rank) is kept only in the file's adapter metadata,
    as diffusers' training scripts keep it. With `text_encoder` the file also
    holds layers for the first text encoder (which no style may have).
    """
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    tiny = build_tiny().pipe
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        config = LoraConfig(
            r=rank,
            lora_alpha=rank if alpha is None else alpha,
            target_modules=list(targets),
            init_lora_weights=False,
        )
        tiny.unet.add_adapter(config)
        text = None
        if text_encoder:
            tiny.text_encoder.add_adapter(
                LoraConfig(r=rank, target_modules=["q_proj"], init_lora_weights=False)
            )
            text = get_peft_model_state_dict(tiny.text_encoder)
    layers = diffusers.utils.convert_state_dict_to_diffusers(get_peft_model_state_dict(tiny.unet))
    metadata = None
    if alpha is not None:
        metadata = {"r": rank, "lora_alpha": alpha, "target_modules": sorted(targets)}
    path.parent.mkdir(parents=True, exist_ok=True)
    diffusers.StableDiffusionXLPipeline.save_lora_weights(
        str(path.parent),
        unet_lora_layers=layers,
        text_encoder_lora_layers=text,
        weight_name=path.name,
        unet_lora_adapter_metadata=metadata,
    )
    return path
