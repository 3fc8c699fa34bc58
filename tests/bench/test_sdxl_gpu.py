"""The GPU benchmark: its full-size architecture, its plan, and a run in miniature on the CPU."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

from bench import safety_cases, sdxl_arch, sdxl_gpu
from bench.sdxl_child import Variant
from pipeline.engine.safety_checker import checker_class
from pipeline.engine.untyped import diffusers, transformers


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_full_size_architecture_is_sdxl_base_with_ip_adapter_encoders() -> None:
    # Built on the meta device: shapes only, no memory. The counts are those
    # of stabilityai/stable-diffusion-xl-base-1.0 and h94/IP-Adapter.
    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel(**sdxl_arch.SDXL_UNET)
        vae = diffusers.AutoencoderKL(**sdxl_arch.SDXL_VAE)
        text_2 = transformers.CLIPTextModelWithProjection(
            transformers.CLIPTextConfig(
                vocab_size=sdxl_arch.VOCAB_SIZE, **sdxl_arch.OPENCLIP_BIGG_TEXT
            )
        )
        encoders = {
            name: transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(**spec))
            for name, spec in sdxl_arch.IMAGE_ENCODERS.items()
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


def test_the_miniature_answers_every_question_on_the_cpu(tmp_path: Path) -> None:
    status = sdxl_gpu.main(
        [
            *("--tiny", "--runs", "1", "--batches", "1,2", "--few-step"),
            *("--schedulers", "DPMSolverMultistepScheduler+karras", "--peaks", "2x128,1x192"),
            *("--results-dir", str(tmp_path), "--workdir", str(tmp_path)),
        ]
    )
    assert status == 0
    [written] = tmp_path.glob("sdxl_gpu-tiny-*.json")
    document = json.loads(written.read_text())
    assert document["miniature"] is True
    assert document["workload"] == {"size": 128, "steps": 2, "batch": 1, "runs": 1}
    # The parent measured nothing itself and holds no GPU memory.
    assert document["machine"]["parent_started_cuda"] is False
    [result] = document["results"]
    assert result["variant"] == "fp32"
    assert result["device"] == "cpu"
    assert "IPAdapterAttnProcessor2_0" in result["attention_processors"]
    assert 0 < result["seconds_per_picture"] < result["start_to_ready_s"]
    assert isinstance(result["per_step_ms"], float)
    assert result["pictures_per_second_batch_2"] > 0
    # Nothing compiled, nothing built in a job.
    assert result["graphs_after_load"] == result["graphs_after_all"] == 0
    # The service's promise: a stop lands within two steps.
    assert result["stop"]["steps_queued_after_the_stop"] <= 2
    assert result["stop"]["steps_done_reported"] < result["stop"]["steps"]
    # On a CPU picture i of a batch is its one-picture job's, to 1 of 255.
    assert result["batch_vs_single"]["largest_pixel_difference"] <= 1
    assert result["scheduler_syncs"] is None
    assert set(result["peaks_checker_resident"]) == {"2x128", "1x192"}
    assert result["peaks_checker_resident"]["2x128"]["reserved_peak_gib"] is None
    assert result["safety"]["size"] == 128
    assert result["schedulers"]["DPMSolverMultistepScheduler+karras"]["seconds_per_picture"] > 0
    assert result["few_step"]["scheduler"] == "LCMScheduler"


def test_on_a_gpu_one_run_asks_every_question_within_ten_minutes() -> None:
    args = sdxl_gpu.parse_args([])
    assert args.steps == 50
    assert args.peaks == ((1, 1024), (4, 1024), (1, 2048))
    assert args.budget == sdxl_gpu.GPU_BUDGET_S <= 600
    # CUDA graphs measured too.
    assert any(Variant.parse(v).mode == "reduce-overhead" for v in args.variants)
    assert sdxl_gpu.parse_args(["--tiny"]).peaks == ()


@pytest.mark.parametrize(
    ("name", "read"),
    [
        ("bf16", ("bf16", None, False, False)),
        ("fp16+compile", ("fp16", "default", False, False)),
        ("bf16+max-autotune+regional", ("bf16", "max-autotune", True, False)),
        ("bf16+reduce-overhead+vae", ("bf16", "reduce-overhead", False, True)),
    ],
)
def test_variant_names(name: str, read: tuple[Any, ...]) -> None:
    variant = Variant.parse(name)
    assert (variant.dtype, variant.mode, variant.regional, variant.vae) == read


@pytest.mark.parametrize("name", ["bf16+regional", "int8", "bf16+compile+reduce-overhead"])
def test_variant_names_not_understood(name: str) -> None:
    with pytest.raises(ValueError, match="variant"):
        Variant.parse(name)


class Children:
    """Stands in for `subprocess.run`: each child writes `figures`, then ends as told."""

    def __init__(self, figures: dict[str, Any], timeout: bool = False) -> None:
        self.figures, self.timeout = figures, timeout
        self.environments: list[dict[str, str]] = []

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        environment = kwargs["env"]
        cache = Path(environment["TORCHINDUCTOR_CACHE_DIR"])
        assert cache.is_dir()
        assert not any(cache.iterdir())
        self.environments.append(environment)
        Path(environment["SDXL_BENCH_OUT"]).write_text(json.dumps(self.figures))
        if self.timeout:
            raise subprocess.TimeoutExpired(argv, kwargs["timeout"], output=b"", stderr=b"late")
        return subprocess.CompletedProcess(argv, 0, stdout="", stderr="")


def test_each_variant_runs_with_expandable_segments_in_a_fresh_inductor_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    children = Children({"variant": "x", "seconds_per_picture": 1.0})
    monkeypatch.setattr(sdxl_gpu.subprocess, "run", children)
    args = sdxl_gpu.parse_args(["--variants", "bf16,bf16+compile"])
    for variant in args.variants:
        sdxl_gpu.run_variant(variant, (tmp_path, tmp_path, tmp_path), args, 60.0)
    caches = {environment["TORCHINDUCTOR_CACHE_DIR"] for environment in children.environments}
    assert len(caches) == 2
    for environment in children.environments:
        assert environment["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"


def test_a_variant_out_of_time_keeps_its_figures_and_the_json_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sdxl_gpu.subprocess, "run", Children({"start_to_ready_s": 41.0}, True))
    monkeypatch.setattr(sdxl_gpu, "_weights", lambda args: (tmp_path, tmp_path, tmp_path))
    status = sdxl_gpu.main(["--variants", "bf16", "--results-dir", str(tmp_path)])
    assert status == 1
    [written] = tmp_path.glob("sdxl_gpu-*.json")
    [result] = json.loads(written.read_text())["results"]
    assert result["start_to_ready_s"] == 41.0
    assert result["error"].startswith("timed out after")


def test_variants_past_the_budget_are_skipped_and_say_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    children = Children({"seconds_per_picture": 1.0})
    monkeypatch.setattr(sdxl_gpu.subprocess, "run", children)
    clock = iter([0.0, 10.0, 500.0])
    monkeypatch.setattr(sdxl_gpu.time, "monotonic", lambda: next(clock))
    args = sdxl_gpu.parse_args(["--variants", "bf16,fp16", "--budget", "540"])
    results = sdxl_gpu.run_all((tmp_path, tmp_path, tmp_path), args)
    assert [r.get("error") for r in results] == [None, "skipped: the run's budget is spent"]
    assert len(children.environments) == 1
