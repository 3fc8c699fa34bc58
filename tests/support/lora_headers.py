"""LoRA ``.safetensors`` files written byte by byte, without torch or numpy.

Their weights are zeros; what they are for is their header (names, shapes,
dtypes), which is all the torch-free checks read. Real LoRAs for the tiny
model are made by :func:`tests.support.assets.make_tiny_lora`.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

_BYTES = {"F16": 2, "BF16": 2, "F32": 4}
BLOCK = "down_blocks.1.attentions.0.transformer_blocks.0"


def write_safetensors(
    path: Path,
    shapes: dict[str, list[int]],
    *,
    dtype: str = "F16",
    metadata: dict[str, str] | None = None,
) -> Path:
    """A valid safetensors file of zero tensors of `shapes`."""
    header: dict[str, object] = {}
    offset = 0
    for name, shape in shapes.items():
        size = _BYTES[dtype]
        for n in shape:
            size *= n
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))
    return path


def diffusers_lora(
    path: Path,
    kinds: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0"),
    rank: int = 4,
    *,
    blocks: int = 2,
    text_encoder: bool = False,
    width: int = 64,
) -> Path:
    """A LoRA in diffusers' names on `kinds` of `blocks` attention blocks."""
    shapes: dict[str, list[int]] = {}
    for block in range(blocks):
        for kind in kinds:
            module = f"unet.down_blocks.1.attentions.{block}.transformer_blocks.0.attn1.{kind}"
            if kind.startswith(("ff.", "proj_")):
                module = f"unet.down_blocks.1.attentions.{block}.{kind}"
            shapes[f"{module}.lora.down.weight"] = [rank, width]
            shapes[f"{module}.lora.up.weight"] = [width, rank]
    if text_encoder:
        q = "text_encoder.text_model.encoder.layers.0.self_attn.q_proj"
        shapes[f"{q}.lora_A.weight"] = [rank, 32]
        shapes[f"{q}.lora_B.weight"] = [32, rank]
    return write_safetensors(path, shapes)


def kohya_lora(path: Path, modules: tuple[str, ...], rank: int = 8) -> Path:
    """A LoRA in kohya-ss names (``lora_unet_<module>``), with alphas."""
    shapes: dict[str, list[int]] = {}
    for module in modules:
        shapes[f"lora_unet_{module}.lora_down.weight"] = [rank, 640]
        shapes[f"lora_unet_{module}.lora_up.weight"] = [640, rank]
        shapes[f"lora_unet_{module}.alpha"] = []
    return write_safetensors(path, shapes)
