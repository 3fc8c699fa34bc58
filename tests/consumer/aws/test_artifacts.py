"""Model artefacts from S3 (moto's server) into the cache, and the pipeline config."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import aioboto3
import pytest
import structlog
from aiobotocore.config import AioConfig

from consumer.aws.artifact_cache import ArtifactCache
from consumer.aws.model_sources import prepare_pipeline_config
from consumer.aws.s3_download import ArtifactError, etag_matches, parse_s3_uri
from consumer.errors import ConfigError
from consumer.settings import Settings
from pipeline.api.config import BUILTIN_BLANK, BUILTIN_TINY, PipelineConfig
from pipeline.builtin.tiny import save_tiny
from tests.support.assets import (
    draw_alike,
    load_generator,
    load_saved,
    make_finetuned_unet,
    make_tiny_lora,
    noise_picture,
)
from tests.support.aws import Stack
from tests.support.downloads import files_under, on_part
from tests.support.specs import spec

KiB = 1024
AVATAR = noise_picture(1)


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny model, its IP-Adapter, a fine-tuned UNet and a LoRA, on disk."""
    root = tmp_path_factory.mktemp("tiny-files")
    model, ip_adapter = save_tiny(root)
    return {
        "model": model,
        "ip_adapter": ip_adapter,
        "unet": make_finetuned_unet(root / "checkpoint-1.safetensors"),
        "lora": make_tiny_lora(root / "lora" / "style.safetensors"),
    }


def mtimes(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


async def _reused_from_cache(settings: Settings, config: PipelineConfig, cached: Path) -> int:
    """Prepare `settings` again: the same `config`, nothing downloaded and no
    file under `cached` written again; how many objects the cache reused."""
    before = mtimes(cached)
    cache = ArtifactCache(settings.model_cache_dir)
    assert await prepare_pipeline_config(settings, cache=cache) == config
    assert cache.stats.objects_downloaded == 0
    assert mtimes(cached) == before
    return cache.stats.objects_reused


def test_s3_uris_are_parsed() -> None:
    uri = parse_s3_uri("s3://bucket/models/sdxl/")
    assert (uri.bucket, uri.key) == ("bucket", "models/sdxl/")
    assert str(uri.child("a", "b.json")) == "s3://bucket/models/sdxl/a/b.json"
    for bad in ("https://bucket/key", "s3:///key"):
        with pytest.raises(ConfigError):
            parse_s3_uri(bad)


async def test_file_is_downloaded_in_ranged_parts_then_reused(stack: Stack, tmp_path: Path) -> None:
    body = os.urandom(300 * KiB + 7)
    uri = stack.put("weights/model.safetensors", body)
    cache = ArtifactCache(tmp_path, part_size=64 * KiB)
    path = await cache.fetch_file(uri)
    assert path.read_bytes() == body
    assert cache.stats.parts_downloaded == 5
    assert cache.stats.bytes_downloaded == len(body)
    before = path.stat().st_mtime_ns

    again = ArtifactCache(tmp_path, part_size=64 * KiB)
    assert await again.fetch_file(uri) == path
    assert again.stats.objects_reused == 1
    assert again.stats.objects_downloaded == again.stats.bytes_downloaded == 0
    assert path.stat().st_mtime_ns == before


async def test_changed_object_is_downloaded_again(stack: Stack, tmp_path: Path) -> None:
    uri = stack.put("weights/model.safetensors", b"first version")
    cache = ArtifactCache(tmp_path)
    path = await cache.fetch_file(uri)
    stack.put("weights/model.safetensors", b"second, longer version")
    assert (await cache.fetch_file(uri)).read_bytes() == b"second, longer version"
    assert path.read_bytes() == b"second, longer version"
    assert cache.stats.objects_downloaded == 2


async def test_interrupted_download_resumes_where_it_stopped(stack: Stack, tmp_path: Path) -> None:
    body = os.urandom(5 * 64 * KiB)
    uri = stack.put("weights/big.safetensors", body)

    def killed(fd: int) -> None:
        raise RuntimeError("the process was killed")

    first = ArtifactCache(tmp_path, part_size=64 * KiB, concurrency=1)
    with on_part(2, killed), pytest.raises(RuntimeError, match="killed"):
        await first.fetch_file(uri)
    assert not first.local_path(parse_s3_uri(uri)).exists()

    second = ArtifactCache(tmp_path, part_size=64 * KiB, concurrency=1)
    with structlog.testing.capture_logs() as logs:
        path = await second.fetch_file(uri)
    assert path.read_bytes() == body
    assert second.stats.parts_downloaded == 3
    assert any(entry["event"] == "artifact_download_resumed" for entry in logs)


async def test_folder_is_mirrored_reused_and_pruned(stack: Stack, tmp_path: Path) -> None:
    stack.put("models/m/model_index.json", b"{}")
    stack.put("models/m/unet/config.json", b'{"a": 1}')
    stack.put("models/m/unet/diffusion_pytorch_model.safetensors", os.urandom(70 * KiB))
    stack.put("models/other/file", b"not part of the folder")
    cache = ArtifactCache(tmp_path, part_size=32 * KiB)
    folder = await cache.fetch_folder(f"s3://{stack.bucket}/models/m")
    assert files_under(folder) == [
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
    ]
    assert cache.stats.objects_downloaded == 3

    stack.client("s3").delete_object(Bucket=stack.bucket, Key="models/m/unet/config.json")
    again = ArtifactCache(tmp_path)
    assert await again.fetch_folder(f"s3://{stack.bucket}/models/m/") == folder
    assert again.stats.objects_downloaded == 0
    assert again.stats.objects_reused == 2
    assert not (folder / "unet" / "config.json").exists()


async def test_missing_objects_are_configuration_errors(stack: Stack, tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        await cache.fetch_file(f"s3://{stack.bucket}/nothing.safetensors")
    with pytest.raises(ConfigError, match="no objects under"):
        await cache.fetch_folder(f"s3://{stack.bucket}/empty/")


async def test_unsafe_keys_never_leave_the_cache(stack: Stack, tmp_path: Path) -> None:
    stack.put("models/evil/../../escape", b"x")
    with pytest.raises(ArtifactError, match="unsafe S3 key"):
        await ArtifactCache(tmp_path).fetch_folder(f"s3://{stack.bucket}/models/evil/")
    assert not (tmp_path.parent / "escape").exists()


async def test_progress_is_logged_when_not_at_a_terminal(stack: Stack, tmp_path: Path) -> None:
    uri = stack.put("weights/model.safetensors", os.urandom(200 * KiB))
    cache = ArtifactCache(tmp_path, part_size=64 * KiB, progress_interval_s=0.0)
    with structlog.testing.capture_logs() as logs:
        await cache.fetch_file(uri)
    progress = [entry for entry in logs if entry["event"] == "artifact_download_progress"]
    assert progress
    assert progress[-1]["bytes_total"] == 200 * KiB
    done = [entry for entry in logs if entry["event"] == "artifact_downloaded"]
    assert done[0]["bytes_done"] == 200 * KiB


def test_etags_are_checked_against_the_content(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    body = os.urandom(11 * 1024 * 1024)
    path.write_bytes(body)
    single = hashlib.md5(body, usedforsecurity=False).hexdigest()
    assert etag_matches(path, f'"{single}"') is True
    assert etag_matches(path, f'"{"0" * 32}"') is False
    part = 5 * 1024 * 1024
    digests = b"".join(
        hashlib.md5(body[i : i + part], usedforsecurity=False).digest()
        for i in range(0, len(body), part)
    )
    multipart = hashlib.md5(digests, usedforsecurity=False).hexdigest()
    assert etag_matches(path, f'"{multipart}-3"') is True
    assert etag_matches(path, f'"{"1" * 32}-3"') is None
    assert etag_matches(path, '"not-an-md5"') is None


async def test_multipart_object_is_verified(stack: Stack, tmp_path: Path) -> None:
    body = os.urandom(11 * 1024 * 1024)
    s3 = stack.client("s3")
    key = "weights/multipart.safetensors"
    upload = s3.create_multipart_upload(Bucket=stack.bucket, Key=key)
    part_size = 5 * 1024 * 1024
    parts = []
    for number, start in enumerate(range(0, len(body), part_size), start=1):
        response = s3.upload_part(
            Bucket=stack.bucket,
            Key=key,
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=body[start : start + part_size],
        )
        parts.append({"ETag": response["ETag"], "PartNumber": number})
    s3.complete_multipart_upload(
        Bucket=stack.bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )
    path = await ArtifactCache(tmp_path).fetch_file(f"s3://{stack.bucket}/{key}")
    assert etag_matches(path, s3.head_object(Bucket=stack.bucket, Key=key)["ETag"]) is True
    assert path.read_bytes() == body


async def test_blank_needs_nothing(tmp_path: Path) -> None:
    settings = Settings(
        model_path=BUILTIN_BLANK, blank_latency_ms=25, model_cache_dir=str(tmp_path)
    )
    config = await prepare_pipeline_config(settings)
    assert config == PipelineConfig(model_path=BUILTIN_BLANK, blank_latency_ms=25)


async def test_local_sources_pass_through(tmp_path: Path) -> None:
    settings = Settings(
        model_path="/models/sdxl",
        ip_adapter_path="/models/ip",
        enable_lora=True,
        lora_path="/models/lora.safetensors",
        lora_scale=0.7,
        torch_compile=True,
        model_cache_dir=str(tmp_path),
    )
    config = await prepare_pipeline_config(settings)
    assert config.model_path == "/models/sdxl"
    assert config.model_name == "/models/sdxl + LoRA /models/lora.safetensors (scale 0.7)"
    assert config.ip_adapter_path == "/models/ip"
    assert config.lora_path == "/models/lora.safetensors"
    assert (config.lora_scale, config.torch_compile, config.weights_file) == (0.7, True, None)


async def test_device_dtype_and_vae_reach_the_pipeline(tmp_path: Path) -> None:
    settings = Settings(
        model_path="/models/sdxl",
        device="cpu",
        dtype="float16",
        vae_path="/models/vae-fp16-fix",
        model_cache_dir=str(tmp_path),
    )
    config = await prepare_pipeline_config(settings)
    assert (config.device, config.dtype, config.vae_path) == (
        "cpu",
        "float16",
        "/models/vae-fp16-fix",
    )
    unset = await prepare_pipeline_config(Settings(model_path="/m", model_cache_dir=str(tmp_path)))
    assert (unset.device, unset.dtype, unset.vae_path) == (None, None, None)


@pytest.mark.parametrize(
    ("device", "torch_compile", "backend"),
    [("cpu", True, "inductor"), ("", True, None), ("cuda", True, None), ("cpu", False, None)],
)
async def test_torch_compile_on_a_cpu_named_by_device_uses_inductor(
    tmp_path: Path, device: str, torch_compile: bool, backend: str | None
) -> None:
    # The pipeline compiles on a CPU only with a backend named: DEVICE=cpu
    # names it, a CPU fallen back to does not; on a GPU its default stands.
    settings = Settings(
        model_path="/m", device=device, torch_compile=torch_compile, model_cache_dir=str(tmp_path)
    )
    config = await prepare_pipeline_config(settings)
    assert (config.torch_compile, config.torch_compile_backend) == (torch_compile, backend)


async def test_vae_folder_from_s3_is_cached(stack: Stack, tmp_path: Path) -> None:
    folder = tmp_path / "vae"
    folder.mkdir()
    (folder / "config.json").write_text('{"_class_name": "AutoencoderKL"}')
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(b"weights" * 100)
    uri = stack.upload_folder(folder, "models/vae")
    settings = Settings(
        model_path="/models/sdxl",
        vae_path=uri,
        model_cache_dir=str(tmp_path / "cache"),
        s3_bucket_name=stack.bucket,
    )
    config = await prepare_pipeline_config(settings)
    assert config.vae_path is not None
    local = Path(config.vae_path)
    assert local.is_relative_to(tmp_path / "cache")
    assert (local / "config.json").read_text() == '{"_class_name": "AutoencoderKL"}'


async def test_tiny_model_folder_from_s3_loads_and_is_cached(
    stack: Stack, tmp_path: Path, tiny_files: dict[str, Path]
) -> None:
    model_uri = stack.upload_folder(tiny_files["model"], "models/tiny")
    ip_uri = stack.upload_folder(tiny_files["ip_adapter"], "adapters/ip")
    lora_uri = stack.put("adapters/lora/style.safetensors", tiny_files["lora"].read_bytes())
    settings = Settings(
        model_s3_path=model_uri,
        ip_adapter_path=ip_uri,
        enable_lora=True,
        lora_path=lora_uri,
        model_cache_dir=str(tmp_path / "cache"),
        warmup=False,
    )
    config = await prepare_pipeline_config(settings)
    # Events name the weights that drew the picture, the LoRA included.
    assert config.model_name == f"{model_uri} + LoRA {lora_uri} (scale 1)"
    assert Path(config.model_path).is_relative_to(tmp_path / "cache")
    assert config.lora_path is not None
    assert Path(config.lora_path).is_relative_to(tmp_path / "cache")
    local = load_saved(
        tiny_files["model"], tiny_files["ip_adapter"], lora_path=str(tiny_files["lora"])
    )
    assert draw_alike(load_generator(config), local, spec(), AVATAR)
    cached = tmp_path / "cache" / "s3"
    assert await _reused_from_cache(settings, config, cached) == len(files_under(cached))


async def test_single_unet_weights_file_from_s3_over_the_base(
    stack: Stack, tmp_path: Path, tiny_files: dict[str, Path]
) -> None:
    weights_uri = stack.put("models/checkpoint-1.safetensors", tiny_files["unet"].read_bytes())
    settings = Settings(
        model_path=str(tiny_files["model"]),
        model_s3_path=weights_uri,
        ip_adapter_path=str(tiny_files["ip_adapter"]),
        model_cache_dir=str(tmp_path / "cache"),
        warmup=False,
    )
    config = await prepare_pipeline_config(settings)
    assert config.model_path == str(tiny_files["model"])
    assert config.model_name == weights_uri
    assert config.weights_file is not None
    local = load_saved(
        tiny_files["model"], tiny_files["ip_adapter"], weights_file=str(tiny_files["unet"])
    )
    assert draw_alike(load_generator(config), local, spec(), AVATAR)
    assert await _reused_from_cache(settings, config, tmp_path / "cache") == 1


async def _ip_adapter_fetched(
    stack: Stack, tmp_path: Path, tiny_files: dict[str, Path], extra: list[str], **fields: Any
) -> tuple[PipelineConfig, list[str]]:
    """The tiny IP-Adapter folder uploaded with the files `extra` beside its own,
    prepared with `fields`: the configuration and the files fetched."""
    ip_uri = stack.upload_folder(tiny_files["ip_adapter"], "adapters/h94")
    for name in extra:
        stack.put(f"adapters/h94/{name}", b"unused")
    settings = Settings(
        model_path=str(tiny_files["model"]),
        ip_adapter_path=ip_uri,
        model_cache_dir=str(tmp_path / "cache"),
        **fields,
    )
    config = await prepare_pipeline_config(settings)
    return config, files_under(Path(config.ip_adapter_path))


async def test_only_the_configured_ip_adapter_files_are_fetched(
    stack: Stack, tmp_path: Path, tiny_files: dict[str, Path]
) -> None:
    extra = [
        "sdxl_models/ip-adapter-plus_sdxl_vit-h.safetensors",
        "models/ip-adapter_sd15.safetensors",
    ]
    _, fetched = await _ip_adapter_fetched(stack, tmp_path, tiny_files, extra)
    assert fetched == [
        "sdxl_models/image_encoder/config.json",
        "sdxl_models/image_encoder/model.safetensors",
        "sdxl_models/ip-adapter_sdxl.safetensors",
    ]


async def test_a_subject_adapter_is_fetched_beside_the_first(
    stack: Stack, tmp_path: Path, tiny_files: dict[str, Path]
) -> None:
    extra = ["sdxl_models/ip-adapter-face.safetensors", "sdxl_models/ip-adapter-other.safetensors"]
    config, fetched = await _ip_adapter_fetched(
        stack,
        tmp_path,
        tiny_files,
        extra,
        subject_ip_adapter_weight_name="ip-adapter-face.safetensors",
    )
    assert config.subject_ip_adapter_weight_name == "ip-adapter-face.safetensors"
    assert "sdxl_models/ip-adapter-face.safetensors" in fetched
    assert "sdxl_models/ip-adapter-other.safetensors" not in fetched


async def test_model_s3_path_must_be_an_s3_uri(tmp_path: Path) -> None:
    settings = Settings(model_path=BUILTIN_TINY, model_s3_path="/local/file.safetensors")
    with pytest.raises(ConfigError, match="MODEL_S3_PATH"):
        await prepare_pipeline_config(settings, cache=ArtifactCache(tmp_path))


async def test_unreachable_s3_is_an_artifact_error(tmp_path: Path) -> None:
    # Nothing listens on port 9 of the loopback address; one attempt, no retries.
    session = aioboto3.Session(region_name="us-east-1")
    config = AioConfig(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=1)

    def unreachable() -> Any:
        return session.client("s3", endpoint_url="http://127.0.0.1:9", config=config)

    settings = Settings(model_path=BUILTIN_TINY, model_s3_path="s3://b/unet.safetensors")
    cache = ArtifactCache(tmp_path, client_factory=unreachable)
    with pytest.raises(ArtifactError, match="cannot reach S3"):
        await prepare_pipeline_config(settings, cache=cache)
