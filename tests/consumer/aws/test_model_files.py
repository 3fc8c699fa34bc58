"""The artefact cache fetches only the files a load reads: a tiny SDXL pipeline
and its IP-Adapter on moto's S3, published the way hub repositories are (full
and fp16 weights, pickles, ONNX, Flax, a single-file checkpoint, a read-me),
arrive as just their configurations, tokenizers and one set of safetensors,
and load and draw as the originals do."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from consumer.aws.artifact_cache import ArtifactCache
from consumer.aws.model_files import select_model_files
from consumer.aws.model_sources import half_precision, prepare_pipeline_config
from consumer.aws.s3_download import RemoteObject
from consumer.settings import Settings
from pipeline.api.config import PipelineConfig
from pipeline.builtin.tiny import build_tiny, save_tiny
from tests.support.assets import draw_alike, load_generator, load_saved, noise_picture
from tests.support.aws import Stack
from tests.support.downloads import files_under
from tests.support.specs import spec

AVATAR = noise_picture(3)
# Published beside the weights the libraries load; never fetched.
JUNK = {
    "model": [
        "README.md",
        "sd_xl_base_1.0.safetensors",
        "unet/diffusion_pytorch_model.bin",
        "unet/diffusion_flax_model.msgpack",
        "text_encoder/model.onnx",
        "vae/sdxl_vae.safetensors",
        "01.png",
    ],
    "ip_adapter": ["sdxl_models/image_encoder/pytorch_model.bin", "sdxl_models/ip-adapter.bin"],
}


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny model (full weights plus an fp16 variant) and IP-Adapter, with junk."""
    root = tmp_path_factory.mktemp("published")
    model, ip_adapter = save_tiny(root)
    build_tiny().pipe.to(dtype=torch.float16).save_pretrained(
        model, safe_serialization=True, variant="fp16"
    )
    for name, folder in (("model", model), ("ip_adapter", ip_adapter)):
        for junk in JUNK[name]:
            (folder / junk).parent.mkdir(parents=True, exist_ok=True)
            (folder / junk).write_bytes(b"\0" * 4096)
    return {"model": model, "ip_adapter": ip_adapter}


def _weights(folder: Path) -> list[str]:
    return [f for f in files_under(folder) if f.endswith(".safetensors")]


async def _fetch(
    stack: Stack, tmp_path: Path, published: dict[str, Path], **settings: str
) -> tuple[PipelineConfig, ArtifactCache]:
    model_uri = stack.upload_folder(published["model"], "models/sdxl")
    ip_uri = stack.upload_folder(published["ip_adapter"], "models/IP-Adapter")
    cache = ArtifactCache(tmp_path / "cache")
    config = await prepare_pipeline_config(
        Settings(
            model_s3_path=model_uri,
            ip_adapter_path=ip_uri,
            model_cache_dir=str(tmp_path / "cache"),
            warmup=False,
            **settings,  # type: ignore[arg-type]
        ),
        cache=cache,
    )
    return config, cache


async def test_only_the_files_a_full_precision_load_reads_are_fetched(
    stack: Stack, tmp_path: Path, published: dict[str, Path]
) -> None:
    config, cache = await _fetch(stack, tmp_path, published)
    model = Path(config.model_path)
    fetched = files_under(model)
    assert not set(JUNK["model"]) & set(fetched)
    assert "model_index.json" in fetched
    assert "tokenizer/tokenizer.json" in fetched
    assert "tokenizer_2/tokenizer_config.json" in fetched
    full = [w for w in _weights(published["model"]) if ".fp16." not in w]
    assert _weights(model) == sorted(set(full) - set(JUNK["model"]))
    assert {w.split("/")[0] for w in _weights(model)} == {
        "unet",
        "vae",
        "text_encoder",
        "text_encoder_2",
    }
    encoder = Path(config.ip_adapter_path) / "sdxl_models" / "image_encoder"
    assert files_under(encoder) == ["config.json", "model.safetensors"]
    # What was fetched is all that was downloaded.
    local = files_under(tmp_path / "cache" / "s3")
    assert cache.stats.objects_downloaded == len(local)

    original = load_saved(published["model"], published["ip_adapter"])
    assert draw_alike(load_generator(config), original, spec(), AVATAR)


async def test_a_half_precision_load_fetches_the_fp16_variant_only(
    stack: Stack, tmp_path: Path, published: dict[str, Path]
) -> None:
    config, _ = await _fetch(stack, tmp_path, published, dtype="float16")
    model = Path(config.model_path)
    weights = _weights(model)
    assert weights
    assert all(".fp16." in w for w in weights)
    assert {w.split("/")[0] for w in weights} == {"unet", "vae", "text_encoder", "text_encoder_2"}
    half = load_generator(
        PipelineConfig(
            model_path=str(model), warmup=False, enable_ip_adapter=False, dtype="float16"
        )
    )
    assert half.pipeline.unet.dtype == torch.float16


def test_half_precision_follows_dtype_then_device() -> None:
    assert half_precision(Settings(dtype="bfloat16"))
    assert not half_precision(Settings(dtype="float32", device="cuda"))
    assert half_precision(Settings(device="cuda"))
    assert not half_precision(Settings())


def test_a_folder_with_one_kind_of_weights_keeps_it() -> None:
    listed = [
        RemoteObject("m/unet/diffusion_pytorch_model.fp16.safetensors", 10, "e"),
        RemoteObject("m/unet/config.json", 1, "e"),
        RemoteObject("m/vae/diffusion_pytorch_model.safetensors", 5, "e"),
        RemoteObject("m/vae/diffusion_pytorch_model.bin", 5, "e"),
        RemoteObject("m/text_encoder/model-00001-of-00002.safetensors", 3, "e"),
        RemoteObject("m/text_encoder/model.safetensors.index.json", 1, "e"),
        RemoteObject("m/tokenizer/merges.txt", 1, "e"),
    ]
    for fp16 in (False, True):
        selection = select_model_files(listed, "m/", fp16_variant=fp16)
        assert [o.key for o in selection.skipped] == ["m/vae/diffusion_pytorch_model.bin"]
        assert selection.skipped_bytes == 5
