"""The GPU benchmark: its full-size architecture, and a run in miniature on the CPU."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

from bench import safety_cases, sdxl_gpu
from pipeline.engine.safety_checker import checker_class
from pipeline.engine.untyped import diffusers, transformers


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_full_size_architecture_is_sdxl_base_with_ip_adapter_encoders() -> None:
    # Built on the meta device: shapes only, no memory. The counts are those
    # of stabilityai/stable-diffusion-xl-base-1.0 and h94/IP-Adapter.
    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel(**sdxl_gpu.SDXL_UNET)
        vae = diffusers.AutoencoderKL(**sdxl_gpu.SDXL_VAE)
        text_2 = transformers.CLIPTextModelWithProjection(
            transformers.CLIPTextConfig(
                vocab_size=sdxl_gpu.VOCAB_SIZE, **sdxl_gpu.OPENCLIP_BIGG_TEXT
            )
        )
        encoders = {
            name: transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(**spec))
            for name, spec in sdxl_gpu.IMAGE_ENCODERS.items()
        }
    assert parameters(unet) == 2_567_463_684
    assert parameters(vae) == 83_653_863
    assert parameters(text_2) == 694_659_840
    assert parameters(encoders["vit-bigg"]) == 1_844_907_264
    assert parameters(encoders["vit-h"]) == 632_076_800


def test_full_size_safety_checker_is_compvis_vit_l_14() -> None:
    config = transformers.CLIPConfig(
        text_config=safety_cases.FULL_TEXT,
        vision_config=safety_cases.FULL_VISION,
        projection_dim=safety_cases.FULL_PROJECTION,
    )
    with torch.device("meta"):
        checker = checker_class()(config)
    # CLIP ViT-L/14's vision tower and projection, plus the 20 concept
    # embeddings and thresholds: CompVis/stable-diffusion-safety-checker.
    assert parameters(checker.vision_model) == 303_179_776
    assert parameters(checker.visual_projection) == 786_432
    assert parameters(checker) == 303_981_588


def test_miniature_run_on_the_cpu(tmp_path: Path) -> None:
    status = sdxl_gpu.main(
        ["--tiny", "--runs", "1", "--results-dir", str(tmp_path), "--workdir", str(tmp_path)]
    )
    assert status == 0
    [written] = tmp_path.glob("sdxl_gpu-tiny-*.json")
    document = json.loads(written.read_text())
    assert document["miniature"] is True
    assert document["workload"] == {"size": 128, "steps": 2, "batch": 1, "runs": 1}
    [result] = document["results"]
    assert result["variant"] == "fp32"
    assert result["device"] == "cpu"
    assert "IPAdapterAttnProcessor2_0" in result["attention_processors"]
    assert 0 < result["seconds_per_image"] < result["start_to_ready_s"]
    assert result["per_step_ms"] > 0
    # The miniature checker, timed on pictures of the run's size.
    assert result["safety"]["size"] == 128
    assert 0 < result["safety"]["seconds_per_picture"] < result["start_to_ready_s"]


def test_miniature_run_with_batches_schedulers_and_the_few_step_recipe(tmp_path: Path) -> None:
    status = sdxl_gpu.main(
        [
            "--tiny",
            "--runs",
            "1",
            "--batches",
            "1,2",
            "--schedulers",
            "DPMSolverMultistepScheduler+karras",
            "--few-step",
            "--peaks",
            "2x128,1x192",
            "--results-dir",
            str(tmp_path),
            "--workdir",
            str(tmp_path),
        ]
    )
    assert status == 0
    [written] = tmp_path.glob("sdxl_gpu-tiny-*.json")
    document = json.loads(written.read_text())
    assert document["cases"] == {
        "batches": [1, 2],
        "schedulers": ["DPMSolverMultistepScheduler+karras"],
        "few_step": True,
        "peaks": ["2x128", "1x192"],
    }
    [result] = document["results"]
    batch = result["batches"]["2"]
    assert 0 < batch["seconds_per_image"] < batch["seconds_per_call"]
    assert result["schedulers"]["DPMSolverMultistepScheduler+karras"]["seconds_per_image"] > 0
    assert result["few_step"]["scheduler"] == "LCMScheduler"
    assert result["few_step"]["steps"] == 4
    assert result["few_step"]["seconds_per_image"] > 0
    assert set(result["peaks"]) == {"2x128", "1x192"}
    assert all(peak["seconds_per_call"] > 0 for peak in result["peaks"].values())


def test_on_a_gpu_it_times_the_services_steps_and_the_largest_requests_peaks() -> None:
    args = sdxl_gpu.parse_args([])
    assert args.steps == 50
    assert args.peaks == ((4, 1024), (1, 2048))
    assert sdxl_gpu.parse_args(["--tiny"]).peaks == ()


def test_each_variant_compiles_into_a_fresh_inductor_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    caches: list[str] = []

    def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        cache = kwargs["env"]["TORCHINDUCTOR_CACHE_DIR"]
        assert Path(cache).is_dir()
        assert not any(Path(cache).iterdir())
        caches.append(cache)
        return subprocess.CompletedProcess(argv, 0, stdout='{"variant": "x"}\n', stderr="")

    monkeypatch.setattr(sdxl_gpu.subprocess, "run", run)
    args = sdxl_gpu.parse_args(["--variants", "bf16,bf16+compile"])
    for variant in args.variants:
        sdxl_gpu.run_variant(variant, (tmp_path, tmp_path, tmp_path), args)
    assert len(set(caches)) == 2
