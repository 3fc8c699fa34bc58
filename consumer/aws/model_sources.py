"""Model artefacts from S3 into the local cache, and the pipeline's configuration.

The pipeline reads local files only; this module is where remote sources
(``MODEL_S3_PATH``, ``IP_ADAPTER_PATH``, ``IP_ADAPTER_IMAGE_ENCODER_PATH``,
``VAE_PATH`` and ``LORA_PATH`` given as ``s3://`` URIs) become local paths under
``MODEL_CACHE_DIR`` (through :class:`~consumer.aws.artifact_cache.ArtifactCache`).
``illustrator run`` calls::

    config = await prepare_pipeline_config(settings)
    generator = pipeline.api.factory.create_generator(config)
    await gpu.run(generator.load)   # on the GPU thread that will generate
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from consumer.aws.artifact_cache import ArtifactCache
from consumer.aws.s3_download import ArtifactError, S3Uri, is_s3_uri, parse_s3_uri
from consumer.errors import ConfigError
from consumer.settings import Settings
from pipeline.api.config import (
    BUILTIN_BLANK,
    BUILTIN_MODELS,
    BUILTIN_PREFIX,
    PIPELINE_EXTRA,
    PipelineConfig,
    hub_cache_dir,
    in_hub_cache,
    missing_model_libraries,
    needs_ip_adapter_files,
)

__all__ = ["ArtifactCache", "ArtifactError", "prepare_pipeline_config"]

# The backend named for a CPU: the one the pipeline uses on a GPU by default.
CPU_COMPILE_BACKEND = "inductor"


async def _resolve_file(cache: ArtifactCache, value: str) -> str:
    return str(await cache.fetch_file(value)) if is_s3_uri(value) else value


async def _resolve_folder(cache: ArtifactCache, value: str) -> str:
    return str(await cache.fetch_folder(value)) if is_s3_uri(value) else value


async def _resolve_model(cache: ArtifactCache, settings: Settings) -> tuple[str, str | None]:
    """(model_path, weights_file) after fetching ``MODEL_S3_PATH``."""
    remote = settings.model_s3_path
    if not remote:
        return settings.model_path, None
    if not is_s3_uri(remote):
        raise ConfigError(f"MODEL_S3_PATH must be an s3:// URI, got {remote!r}")
    if remote.endswith(".safetensors"):
        return settings.model_path, str(await cache.fetch_file(remote))
    folder = await cache.fetch_folder(remote, fp16_variant=half_precision(settings))
    return str(folder), None


def half_precision(settings: Settings) -> bool:
    """Whether the model loads in half precision, and so reads the ``fp16``
    variant of a folder that has one: ``DTYPE`` float16 or bfloat16, or no
    ``DTYPE`` with ``DEVICE=cuda`` (half is the GPU default)."""
    if settings.dtype:
        return settings.dtype in ("float16", "bfloat16")
    return settings.device == "cuda"


async def _resolve_ip_adapter(cache: ArtifactCache, settings: Settings) -> tuple[str, str | None]:
    """(ip_adapter_path, image_encoder_path), fetching only the files used.

    For an ``s3://`` IP-Adapter folder laid out like ``h94/IP-Adapter``, only
    ``<subfolder>/<weight_name>`` and, unless an encoder path is given,
    ``<subfolder>/image_encoder/`` are downloaded, not every adapter variant.
    """
    encoder = settings.ip_adapter_image_encoder_path or None
    if encoder:
        encoder = await _resolve_folder(cache, encoder)
    source = settings.ip_adapter_path
    if not is_s3_uri(source):
        return source, encoder
    root = parse_s3_uri(source)
    names = [settings.ip_adapter_weight_name, settings.subject_ip_adapter_weight_name]
    for name in filter(None, names):
        await cache.fetch_file(str(root.child(settings.ip_adapter_subfolder, name)))
    if encoder is None:
        await cache.fetch_folder(str(root.child(settings.ip_adapter_subfolder, "image_encoder")))
    return str(cache.local_path(S3Uri(root.bucket, root.key.rstrip("/") + "/"))), encoder


async def prepare_pipeline_config(
    settings: Settings, *, cache: ArtifactCache | None = None
) -> PipelineConfig:
    """Fetch what `settings` names on S3 and describe the pipeline with local paths.

    Async: downloads run on the event loop, which stays free for the health
    sidecar. Raises :class:`ConfigError` for a malformed URI or a missing
    object, :class:`ArtifactError` when a download fails its checks.
    """
    if settings.model_path == BUILTIN_BLANK:
        return PipelineConfig(model_path=BUILTIN_BLANK, blank_latency_ms=settings.blank_latency_ms)
    cache = cache or ArtifactCache(settings.model_cache_dir, region=settings.aws_region)
    try:
        return await _prepare(settings, cache)
    except OSError as error:
        # The cache folder cannot be written (full disk, wrong permissions).
        raise ArtifactError(f"model cache {cache.root}: {error}") from error


async def _prepare(settings: Settings, cache: ArtifactCache) -> PipelineConfig:
    model_path, weights_file = await _resolve_model(cache, settings)
    ip_adapter_path, image_encoder_path = settings.ip_adapter_path, None
    if settings.enable_ip_adapter and needs_ip_adapter_files(model_path):
        ip_adapter_path, image_encoder_path = await _resolve_ip_adapter(cache, settings)
    lora_path = await _resolve_file(cache, settings.lora_path) if settings.enable_lora else None
    vae_path = await _resolve_folder(cache, settings.vae_path) if settings.vae_path else None
    return PipelineConfig(
        **pipeline_settings(settings),
        model_path=model_path,
        model_name=reported_model(settings),
        weights_file=weights_file,
        ip_adapter_path=ip_adapter_path,
        image_encoder_path=image_encoder_path,
        lora_path=lora_path,
        vae_path=vae_path,
        torch_compile_backend=compile_backend(settings),
    )


def reported_model(settings: Settings) -> str:
    """The model's name in events and output metadata: what drew the picture.

    ``MODEL_S3_PATH`` when set (it wins over ``MODEL_PATH``), else
    ``MODEL_PATH``; with a LoRA fused in, its source and scale follow
    (``s3://b/models/sdxl/ + LoRA s3://b/models/loras/v3.safetensors (scale 0.8)``),
    so a LoRA rollout shows in every event.
    """
    base = settings.model_s3_path or settings.model_path
    if settings.enable_lora and settings.lora_path:
        return f"{base} + LoRA {settings.lora_path} (scale {settings.lora_scale:g})"
    return base


def compile_backend(settings: Settings) -> str | None:
    """The pipeline's ``torch.compile`` backend: its own default (``None``:
    inductor, on a GPU only) unless ``DEVICE=cpu`` names the CPU, where
    ``TORCH_COMPILE`` then compiles too, with inductor's C++ code. A CPU the
    worker merely fell back to is never compiled for."""
    if settings.torch_compile and settings.device == "cpu":
        return CPU_COMPILE_BACKEND
    return None


def pipeline_settings(settings: Settings) -> dict[str, Any]:
    """The settings that share a name with a :class:`PipelineConfig` field.

    The settings say "unset" with an empty value (``""``, ``0``) where the
    pipeline says ``None``; a field whose default is ``None`` gets ``None``
    for it. Paths that may name S3 sources are resolved by the caller.
    """
    values: dict[str, Any] = {}
    for spec in dataclasses.fields(PipelineConfig):
        if spec.name in _RESOLVED or spec.name not in Settings.model_fields:
            continue
        value = getattr(settings, spec.name)
        values[spec.name] = None if spec.default is None and not value else value
    return values


# Fields whose local value comes from resolving a setting, not from the setting
# itself; and torch_compile_backend (see compile_backend).
_RESOLVED = frozenset(
    {"model_path", "model_name", "weights_file", "ip_adapter_path", "image_encoder_path"}
    | {"lora_path", "vae_path", "torch_compile_backend"}
    # The styles' LoRA slot and files: from the catalog (consumer.aws.style_source).
    | {"style_slot", "style_loras"}
)


def _looks_like_hub_id(value: str) -> bool:
    parts = value.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not value.startswith((".", "~"))


def check_pipeline_installed(settings: Settings) -> None:
    """Raise :class:`ConfigError` when the model needs libraries not installed here.

    Every model but ``builtin:blank``, and the safety checker, need the
    pipeline's libraries (torch, diffusers, ...), which the project's
    ``gpu`` extra installs; the commands an operator runs do not.
    """
    if settings.model_path == BUILTIN_BLANK and not settings.safety_checker_path:
        return
    missing = missing_model_libraries()
    if missing:
        setting = "MODEL_PATH" if settings.model_path != BUILTIN_BLANK else "SAFETY_CHECKER_PATH"
        value = getattr(settings, setting.lower())
        raise ConfigError(
            f"{setting}={value}: the pipeline's libraries are not installed here "
            f"({', '.join(missing)}); install the project with its {PIPELINE_EXTRA} extra: "
            f"pip install 'autobio-illustrator[{PIPELINE_EXTRA}]' (in a checkout: "
            f"pip install '.[{PIPELINE_EXTRA}]')"
        )


def check_model_source(settings: Settings) -> None:
    """Raise :class:`ConfigError` when ``MODEL_PATH`` cannot name a model here.

    Checked before anything heavy is loaded, without the network: a known
    built-in, an existing local folder, or a hub id already in the local hub
    cache (the pipeline reads local files only). Skipped when
    ``MODEL_S3_PATH`` is set, because that source is fetched at start and wins.
    """
    value = settings.model_path
    check_pipeline_installed(settings)
    if settings.model_s3_path:
        return
    valid = ", ".join(BUILTIN_MODELS)
    if value.startswith(BUILTIN_PREFIX):
        if value not in BUILTIN_MODELS:
            raise ConfigError(f"MODEL_PATH={value}: unknown built-in model (valid: {valid})")
        return
    if not value:
        raise ConfigError(f"MODEL_PATH is empty: give a folder, a cached hub id or one of {valid}")
    if Path(value).expanduser().is_dir():
        return
    hub_id = _looks_like_hub_id(value)
    if hub_id and in_hub_cache(value):
        return
    if hub_id and not Path(value).exists():
        reason = f"not a local folder, nor a hub id in the local hub cache {hub_cache_dir()}"
    else:
        reason = "not a local folder"
    raise ConfigError(f"MODEL_PATH={value}: {reason} (built-ins: {valid})")
