"""Loading SDXL, its IP-Adapter and its image encoder from local files.

Everything is read with ``local_files_only=True``: a hub id is looked up in
the local hub cache (``HF_HOME``) and never fetched, whether or not
``HF_HUB_OFFLINE`` is set. The consumer downloads ``s3://`` sources first
(``consumer.aws.model_sources``), so here every path is on this machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import huggingface_hub
import structlog
import torch

from pipeline.api.config import PipelineConfig
from pipeline.api.errors import ModelLoadError
from pipeline.engine.reference.clip import clip_feature_extractor
from pipeline.engine.untyped import (
    SDXLPipeline,
    diffusers,
    diffusers_dtype,
    transformers,
    transformers_dtype,
)
from pipeline.engine.weights.checkpoints import (
    WeightsKind,
    load_checkpoint,
    load_unet_weights,
    weights_kind,
)
from pipeline.engine.weights.source import IPAdapterParts, ModelSource

log = structlog.get_logger(__name__)

SDXL_NATIVE_SIZE = (1024, 1024)
IMAGE_ENCODER_FOLDER = "image_encoder"
FP16_VARIANT = "fp16"
HALF_DTYPES = (torch.float16, torch.bfloat16)
_LOAD_ERRORS = (OSError, ValueError, KeyError, RuntimeError)


def _not_found(what: str, where: str, error: BaseException) -> ModelLoadError:
    hint = (
        "a local folder or a hub id already in the local hub cache is needed "
        "(nothing is downloaded from the hub at run time)"
    )
    return ModelLoadError(f"cannot load {what} from {where!r}: {error}; {hint}")


def model_folder(path: str) -> Path | None:
    """The folder `path` names: itself, or a hub id's cached snapshot; else ``None``."""
    if Path(path).is_dir():
        return Path(path)
    try:
        # Cache only: nothing is downloaded, so there is no revision to pin.
        return Path(huggingface_hub.snapshot_download(path, local_files_only=True))  # nosec B615
    except (OSError, ValueError) as error:
        log.debug("model_folder_not_cached", model=path, error=type(error).__name__)
        return None


def weights_variant(path: str, dtype: torch.dtype) -> str | None:
    """``"fp16"`` for a half-precision load of a model that ships fp16 files.

    SDXL folders often hold both full-precision files and a ``fp16`` variant
    (``unet/diffusion_pytorch_model.fp16.safetensors``). Read in half
    precision anyway, the variant is half the bytes to read; the weights are
    the same to half precision, bfloat16 included.
    """
    if dtype not in HALF_DTYPES:
        return None
    folder = model_folder(path)
    if folder is None or not any(folder.glob(f"*/*.{FP16_VARIANT}.safetensors")):
        return None
    return FP16_VARIANT


def load_pretrained(path: str, dtype: torch.dtype) -> SDXLPipeline:
    """A diffusers SDXL folder or cached hub id, in `dtype`, on the CPU.

    The ``fp16`` variant is read when there is one and `dtype` is half.
    """
    variant = weights_variant(path, dtype)
    if variant:
        log.info("loading_variant", variant=variant)
    try:
        return diffusers.StableDiffusionXLPipeline.from_pretrained(
            path, local_files_only=True, variant=variant, **diffusers_dtype(dtype)
        )
    except _LOAD_ERRORS as error:
        raise _not_found("the SDXL model", path, error) from error


def load_image_encoder(path: str, subfolder: str, dtype: torch.dtype) -> Any:
    """The CLIP vision encoder at `path`/`subfolder`, in `dtype`."""
    try:
        # Never downloads: local_files_only reads the local folder or hub cache.
        encoder = transformers.CLIPVisionModelWithProjection.from_pretrained(  # nosec B615
            path, subfolder=subfolder, local_files_only=True, **transformers_dtype(dtype)
        )
    except _LOAD_ERRORS as error:
        raise _not_found("the IP-Adapter image encoder", f"{path}/{subfolder}", error) from error
    return encoder.eval()


def split_hub_path(value: str) -> tuple[str, str]:
    """(repository or folder, subfolder) of an encoder location.

    A local folder is taken whole; ``owner/name/sub/folder`` names a folder
    inside a hub repository, as in ``h94/IP-Adapter/models/image_encoder``.
    """
    parts = value.split("/")
    if Path(value).exists() or len(parts) <= 2:
        return value, ""
    return "/".join(parts[:2]), "/".join(parts[2:])


class PretrainedSource(ModelSource):
    """SDXL from a local folder or the hub cache, plus an optional weights file."""

    expected_native_size = SDXL_NATIVE_SIZE

    def __init__(self, config: PipelineConfig) -> None:
        self._config = config
        self.name = config.model_path

    def base_pipeline(self, dtype: torch.dtype) -> SDXLPipeline:
        """The base model, with the weights file and replacement VAE applied."""
        config = self._config
        weights = config.weights_file
        kind = weights_kind(weights) if weights else None
        if weights and kind is WeightsKind.CHECKPOINT:
            log.info("loading_checkpoint", weights_file=weights, config_from=config.model_path)
            pipe = load_checkpoint(weights, config.model_path, dtype)
        else:
            pipe = load_pretrained(config.model_path, dtype)
            if weights:
                log.info("loading_unet_weights", weights_file=weights)
                load_unet_weights(pipe, weights)
        if config.vae_path:
            pipe.register_modules(vae=load_vae(config.vae_path, dtype))
        return pipe

    def ip_adapter(self, dtype: torch.dtype) -> IPAdapterParts:
        """The IP-Adapter weights location and its image encoder."""
        config = self._config
        if config.image_encoder_path:
            encoder = load_image_encoder(*split_hub_path(config.image_encoder_path), dtype)
        else:
            subfolder = Path(config.ip_adapter_subfolder, IMAGE_ENCODER_FOLDER).as_posix()
            encoder = load_image_encoder(config.ip_adapter_path, subfolder, dtype)
        return IPAdapterParts(
            weights=config.ip_adapter_path,
            image_encoder=encoder,
            feature_extractor=clip_feature_extractor(int(encoder.config.image_size)),
            subfolder=config.ip_adapter_subfolder,
            weight_name=config.ip_adapter_weight_name,
            subject_weight_name=config.subject_ip_adapter_weight_name,
        )


def load_vae(path: str, dtype: torch.dtype) -> Any:
    """An ``AutoencoderKL`` from a local folder or cached hub id, in `dtype`."""
    try:
        vae = diffusers.AutoencoderKL.from_pretrained(
            path, local_files_only=True, **diffusers_dtype(dtype)
        )
    except _LOAD_ERRORS as error:
        raise _not_found("the VAE", path, error) from error
    return vae
