"""The GPU benchmark's model: SDXL base 1.0 + IP-Adapter at full size, random weights.

Speed and memory do not depend on the weights, so the architecture (SDXL base
1.0's UNet, VAE and both text encoders, the IP-Adapter image encoder and
``ip-adapter_sdxl`` weights of matching shapes) is built in code and saved
once as float16 safetensors, as SDXL's ``fp16`` variant is distributed, with
the safety checker of CompVis's architecture beside it. It runs in a process
of its own (``python -m bench.sdxl_arch``), so the benchmark's parent never
holds GPU memory while its variants measure.

    python -m bench.sdxl_arch --workdir DIR [--image-encoder vit-h] [--device cuda]
    python -m bench.sdxl_arch --workdir DIR --tiny      # builtin:tiny, saved
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SDXL_UNET: dict[str, Any] = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": (5, 10, 20),
    "transformer_layers_per_block": (1, 2, 10),
    "use_linear_projection": True,
    "cross_attention_dim": 2048,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "norm_num_groups": 32,
}
SDXL_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 1024,
    "scaling_factor": 0.13025,
    "force_upcast": True,
}
CLIP_L_TEXT: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
}
OPENCLIP_BIGG_TEXT: dict[str, Any] = {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_attention_heads": 20,
    "num_hidden_layers": 32,
    "projection_dim": 1280,
    "hidden_act": "gelu",
}
# h94/IP-Adapter: sdxl_models/image_encoder (OpenCLIP ViT-bigG/14) goes with
# ip-adapter_sdxl.safetensors, the service's default; models/image_encoder
# (ViT-H/14) goes with ip-adapter_sdxl_vit-h.safetensors.
IMAGE_ENCODERS: dict[str, dict[str, Any]] = {
    "vit-bigg": {
        "hidden_size": 1664,
        "intermediate_size": 8192,
        "num_attention_heads": 16,
        "num_hidden_layers": 48,
        "projection_dim": 1280,
        "image_size": 224,
        "patch_size": 14,
        "hidden_act": "gelu",
    },
    "vit-h": {
        "hidden_size": 1280,
        "intermediate_size": 5120,
        "num_attention_heads": 16,
        "num_hidden_layers": 32,
        "projection_dim": 1024,
        "image_size": 224,
        "patch_size": 14,
        "hidden_act": "gelu",
    },
}
VOCAB_SIZE = 49408


def build_full_size(directory: Path, encoder: str, device: str) -> tuple[Path, Path]:
    """Save random-weight SDXL + IP-Adapter at full size; (model_dir, ip_adapter_dir).

    Built on `device` (fast on a GPU) and saved in float16, as SDXL's
    ``fp16`` variant is distributed.
    """
    import torch
    from safetensors.torch import save_file

    from pipeline.api.config import IP_ADAPTER_SUBFOLDER, IP_ADAPTER_WEIGHT_NAME
    from pipeline.engine.untyped import transformers

    def text_config(spec: dict[str, Any]) -> Any:
        return transformers.CLIPTextConfig(
            vocab_size=VOCAB_SIZE,
            max_position_embeddings=77,
            bos_token_id=0,
            eos_token_id=1,
            **spec,
        )

    torch.manual_seed(0)
    # Initialised in float16 directly: half the memory of building in float32
    # and casting, which matters when this runs on a CPU.
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)
    try:
        parts = _build_modules(device, encoder, text_config)
    finally:
        torch.set_default_dtype(default_dtype)
    pipe, image_encoder, ip_weights = parts
    model_dir, ip_dir = directory / "model", directory / "ip_adapter"
    pipe.save_pretrained(model_dir, safe_serialization=True)
    encoder_dir = ip_dir / IP_ADAPTER_SUBFOLDER / "image_encoder"
    image_encoder.save_pretrained(encoder_dir, safe_serialization=True)
    save_file(ip_weights, str(ip_dir / IP_ADAPTER_SUBFOLDER / IP_ADAPTER_WEIGHT_NAME))
    return model_dir, ip_dir


def _build_modules(device: str, encoder: str, text_config: Any) -> tuple[Any, Any, Any]:
    import torch

    from pipeline.builtin.tiny import tiny_tokenizer
    from pipeline.engine.untyped import diffusers, transformers

    with torch.device(device):
        unet = diffusers.UNet2DConditionModel(**SDXL_UNET)
        pipe = diffusers.StableDiffusionXLPipeline(
            vae=diffusers.AutoencoderKL(**SDXL_VAE),
            text_encoder=transformers.CLIPTextModel(text_config(CLIP_L_TEXT)),
            text_encoder_2=transformers.CLIPTextModelWithProjection(
                text_config(OPENCLIP_BIGG_TEXT)
            ),
            # The tokenizer's vocabulary does not change the cost of a step.
            tokenizer=tiny_tokenizer(),
            tokenizer_2=tiny_tokenizer(),
            unet=unet,
            scheduler=diffusers.EulerDiscreteScheduler(
                beta_start=0.00085,
                beta_end=0.012,
                beta_schedule="scaled_linear",
                steps_offset=1,
                timestep_spacing="leading",
            ),
        )
        vision = transformers.CLIPVisionConfig(**IMAGE_ENCODERS[encoder])
        image_encoder = transformers.CLIPVisionModelWithProjection(vision)
        ip_weights = _ip_adapter_weights(unet, vision.projection_dim)
    return pipe, image_encoder, ip_weights


def _ip_adapter_weights(unet: Any, embed_dim: int) -> dict[str, Any]:
    """``ip-adapter_sdxl`` shapes for `unet`, flattened as in the released file."""
    import torch

    from pipeline.builtin.tiny import random_ip_adapter_weights

    grouped = random_ip_adapter_weights(unet, image_embed_dim=embed_dim)
    return {
        f"{group}.{key}": tensor.to(torch.float16).contiguous().cpu()
        for group, tensors in grouped.items()
        for key, tensor in tensors.items()
    }


def prepare_tiny(directory: Path) -> tuple[Path, Path]:
    """The miniature: ``builtin:tiny`` saved as a local folder."""
    from pipeline.builtin.tiny import save_tiny

    return save_tiny(directory)


def weights_folder(workdir: Path, *, tiny: bool, image_encoder: str) -> Path:
    """Where the model of these options is saved under `workdir`."""
    return workdir / ("tiny" if tiny else f"sdxl-{image_encoder}")


def saved(root: Path) -> tuple[Path, Path, Path] | None:
    """(model, IP-Adapter, safety checker) folders under `root` once all are saved."""
    model_dir, ip_dir = root / "model", root / "ip_adapter"
    checkers = [root / "safety_checker", root / "safety_checker_tiny"]
    checker = next((c for c in checkers if (c / "config.json").exists()), None)
    if (model_dir / "model_index.json").exists() and ip_dir.exists() and checker:
        return model_dir, ip_dir, checker
    return None


def build(root: Path, *, tiny: bool, image_encoder: str, device: str) -> tuple[Path, Path, Path]:
    """Build and save everything the benchmark loads, unless it is saved already."""
    from bench.safety_cases import build_checker

    ready = saved(root)
    if ready:
        return ready
    model_dir, ip_dir = prepare_tiny(root) if tiny else build_full_size(root, image_encoder, device)
    checker_dir = build_checker(root, tiny=tiny, device=device)
    return model_dir, ip_dir, checker_dir


def main(argv: Sequence[str] | None = None) -> int:
    """Build the weights; print their folders as one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.sdxl_arch", description=__doc__)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--image-encoder", choices=sorted(IMAGE_ENCODERS), default="vit-h")
    parser.add_argument("--device", default="cpu", help="where the weights are initialised")
    args = parser.parse_args(argv)
    root = weights_folder(args.workdir, tiny=args.tiny, image_encoder=args.image_encoder)
    started = time.perf_counter()
    folders = build(root, tiny=args.tiny, image_encoder=args.image_encoder, device=args.device)
    seconds = round(time.perf_counter() - started, 1)
    print(json.dumps({"folders": [str(f) for f in folders], "seconds": seconds}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
