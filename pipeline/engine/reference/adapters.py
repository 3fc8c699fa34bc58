"""Attaching the IP-Adapter and fusing a LoRA into a loaded SDXL pipeline."""

from __future__ import annotations

from pathlib import Path

import structlog
import torch
from PIL import Image

from pipeline.api.errors import ModelLoadError
from pipeline.api.spec import JobKind
from pipeline.engine.untyped import SDXLPipeline
from pipeline.engine.weights.source import IPAdapterParts

log = structlog.get_logger(__name__)

LORA_ADAPTER_NAME = "illustrator"


def attach_ip_adapter(pipe: SDXLPipeline, parts: IPAdapterParts) -> None:
    """Load the IP-Adapter into `pipe`'s UNet with the given image encoder.

    The encoder and preprocessor are registered first, so ``load_ip_adapter``
    loads only the adapter weights and never looks for an encoder itself.
    """
    pipe.register_modules(
        image_encoder=parts.image_encoder, feature_extractor=parts.feature_extractor
    )
    names = [parts.weight_name]
    if parts.subject_weight_name:
        names.append(parts.subject_weight_name)
        log.info("subject_ip_adapter", weight_name=parts.subject_weight_name)
    try:
        pipe.load_ip_adapter(
            [parts.weights] * len(names),
            subfolder=[parts.subfolder] * len(names),
            weight_name=names,
            image_encoder_folder=None,
            local_files_only=True,
        )
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        where = parts.weights if isinstance(parts.weights, str) else "a state dict"
        raise ModelLoadError(
            f"cannot load IP-Adapter weights {', '.join(names)} from {where!r}: {error}"
        ) from error


def adapter_for(kind: JobKind, adapters: int) -> int:
    """Which of the loaded IP-Adapters a job of `kind` uses.

    The first serves every job; a second one, when loaded, serves subject jobs.
    """
    return 1 if kind is JobKind.SUBJECT and adapters > 1 else 0


def encode_reference(pipe: SDXLPipeline, image: Image.Image, guidance: bool) -> list[torch.Tensor]:
    """The reference picture's embeddings for each loaded IP-Adapter, encoded once.

    diffusers would run the image encoder once per adapter, the inactive one
    included; adapters of the same kind take the same embeddings, so one pass
    serves them all (a second only for an adapter of the other kind, which
    reads the encoder's hidden states). With `guidance` each is the
    unconditional embedding followed by the picture's, as diffusers expects.
    """
    device = pipe._execution_device
    encoded: dict[bool, torch.Tensor] = {}
    embeds = []
    for layer in pipe.unet.encoder_hid_proj.image_projection_layers:
        hidden = type(layer).__name__ != "ImageProjection"
        if hidden not in encoded:
            positive, negative = pipe.encode_image(image, device, 1, hidden)
            single = positive[None, :]
            encoded[hidden] = torch.cat([negative[None, :], single]) if guidance else single
        embeds.append(encoded[hidden])
    return embeds


def fuse_lora(pipe: SDXLPipeline, path: str, scale: float) -> None:
    """Load the LoRA file at `path`, fuse it at `scale`, and drop its layers.

    Fusing folds the LoRA into the base weights once at load, so generation
    costs nothing extra; the adapter layers are then removed to free memory.
    """
    file = Path(path)
    if not file.is_file():
        raise ModelLoadError(f"LoRA weights file {path!r} does not exist")
    # Fused in float32, then cast: adding the LoRA's small update to half
    # precision weights would round it away, or round it twice.
    dtypes = {name: next(module.parameters()).dtype for name, module in _lora_targets(pipe)}
    for name, module in _lora_targets(pipe):
        if dtypes[name] != torch.float32:
            module.to(dtype=torch.float32)
    try:
        pipe.load_lora_weights(
            str(file.parent),
            weight_name=file.name,
            adapter_name=LORA_ADAPTER_NAME,
            local_files_only=True,
        )
        pipe.fuse_lora(lora_scale=scale, adapter_names=[LORA_ADAPTER_NAME])
        pipe.unload_lora_weights()
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise ModelLoadError(f"cannot load LoRA weights from {path!r}: {error}") from error
    finally:
        for name, module in _lora_targets(pipe):
            module.to(dtype=dtypes[name])
    log.info("lora_fused", lora_path=path, lora_scale=scale)


def _lora_targets(pipe: SDXLPipeline) -> list[tuple[str, torch.nn.Module]]:
    # What a LoRA file may hold weights for.
    names = ("unet", "text_encoder", "text_encoder_2")
    return [(name, getattr(pipe, name)) for name in names if getattr(pipe, name, None) is not None]
