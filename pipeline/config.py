"""What the pipeline needs to build its generator, all of it local.

The consumer resolves remote sources (``s3://`` model folders, weights files,
LoRA and IP-Adapter weights) into local paths before building this, so the
pipeline never talks to AWS.
"""

from __future__ import annotations

from dataclasses import dataclass

BUILTIN_TINY = "builtin:tiny"
BUILTIN_BLANK = "builtin:blank"


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
        subject_ip_adapter_weight_name: a second IP-Adapter weights file,
            beside ``ip_adapter_weight_name`` (same path and subfolder, and
            trained on the same image encoder, such as
            ``ip-adapter-plus-face_sdxl_vit-h.safetensors`` beside
            ``ip-adapter-plus_sdxl_vit-h.safetensors``), that subject jobs use
            instead; ``None``: both kinds use the one adapter. A real model only.
    """

    model_path: str
    weights_file: str | None = None
    enable_ip_adapter: bool = True
    ip_adapter_path: str = "h94/IP-Adapter"
    ip_adapter_subfolder: str = "sdxl_models"
    ip_adapter_weight_name: str = "ip-adapter_sdxl.safetensors"
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
    subject_ip_adapter_weight_name: str | None = None
