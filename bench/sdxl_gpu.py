"""SDXL + IP-Adapter on a GPU: seconds per image, peak memory, start to ready.

Beside each variant, the safety checker's seconds per picture at the same
size and precision (``bench/safety_cases.py``).

The full-size architecture (SDXL base 1.0's UNet, VAE and both text encoders,
the IP-Adapter image encoder and ``ip-adapter_sdxl`` weights of matching
shapes) is built with random weights, since speed does not depend on them,
and saved once to a local folder. Each variant then runs in a fresh process
through the service's own loading path (``create_generator(...).load()``),
so "start to ready" covers interpreter start, imports, reading the weights
from local disk, moving them to the GPU and the warm-up generation.

    python -m bench.sdxl_gpu                      # on a GPU: every variant
    python -m bench.sdxl_gpu --tiny               # in miniature on a CPU

On a GPU each variant also times batches of 2 and 4 pictures, two other
schedulers and the few-step recipe (``bench/sdxl_cases.py``); ``--batches``,
``--schedulers`` and ``--few-step`` choose them in miniature too.

Figures are printed and written to ``bench/results/sdxl_gpu-*.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"
TARGETS = {"seconds_per_image": 1.5, "peak_gib": 11.0, "start_to_ready_s": 20.0}
GPU_VARIANTS = ("bf16", "fp16", "bf16+compile", "fp16+compile")
CPU_VARIANTS = ("fp32",)
GPU_SCHEDULERS = "DPMSolverMultistepScheduler+karras,EulerAncestralDiscreteScheduler"
# The largest requests: four pictures at the native size, one at the largest side.
GPU_PEAKS = "4x1024,1x2048"
# The service's default step count (DEFAULT_NUM_INFERENCE_STEPS).
SERVICE_STEPS = 50
GiB = 1024**3

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


@dataclasses.dataclass(frozen=True)
class Workload:
    """What one timed generation draws."""

    size: int
    steps: int
    runs: int


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


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """In the child: load one variant through the service's path, then time it."""
    import torch
    from PIL import Image

    from bench.safety_cases import measure_safety
    from bench.sdxl_cases import measure_cases
    from pipeline.api.config import PipelineConfig
    from pipeline.api.factory import create_generator
    from pipeline.api.spec import GenerationSpec, JobKind
    from pipeline.engine.generator import SDXLGenerator
    from pipeline.engine.runtime.device import peak_memory_bytes, reset_peak_memory

    dtype, _, compiled = args.variant.partition("+")
    config = PipelineConfig(
        model_path=args.model_dir,
        ip_adapter_path=args.ip_dir,
        dtype=dtype,
        torch_compile=bool(compiled),
        device=args.device,
    )
    generator = create_generator(config)
    assert isinstance(generator, SDXLGenerator)
    generator.load()
    device = torch.device(generator.pipeline.device)
    _synchronise(device)
    ready_s = time.time() - args.started_at
    load_peak = peak_memory_bytes(device)
    reset_peak_memory(device)
    spec = GenerationSpec(
        kind=JobKind.MEMORY,
        prompt="a family picnic by a lake in summer",
        style_prompt="highest quality, monochrome, professional sketch",
        negative_prompt="error, glitch, mistake",
        num_inference_steps=args.steps,
        ip_adapter_scale=0.33,
        guidance_scale=5.0,
        seed=1,
        width=args.size,
        height=args.size,
    )
    avatar = Image.linear_gradient("L").convert("RGB")
    seconds = []
    for run in range(args.runs):
        start = time.perf_counter()
        generator.generate(dataclasses.replace(spec, seed=run), avatar)
        _synchronise(device)
        seconds.append(time.perf_counter() - start)
    pipe = generator.pipeline
    processors = {type(p).__name__ for p in pipe.unet.attn_processors.values()}
    return {
        "variant": args.variant,
        "device": str(device),
        "dtype": dtype,
        "torch_compile": bool(compiled),
        "attention_processors": sorted(processors),
        "start_to_ready_s": round(ready_s, 2),
        "load_seconds": round(generator.load_seconds or 0.0, 2),
        "seconds_per_image": round(statistics.median(seconds), 3),
        "seconds_min": round(min(seconds), 3),
        "seconds_all": [round(s, 3) for s in seconds],
        "per_step_ms": round(1000 * statistics.median(seconds) / args.steps, 2),
        "peak_gib_generating": round(peak_memory_bytes(device) / GiB, 2),
        "peak_gib_loading": round(load_peak / GiB, 2),
        "peak_reserved_gib": round(_reserved(device) / GiB, 2),
        "weights_gib": _weights_gib(pipe),
        **measure_cases(
            generator,
            config,
            spec,
            avatar,
            args,
            lambda: _synchronise(device),
            lambda: peak_memory_bytes(device) / GiB,
            lambda: reset_peak_memory(device),
        ),
        # The checker of the same precision, on pictures of the same size.
        **measure_safety(
            Path(args.checker_dir),
            device=str(device),
            dtype=dtype,
            size=args.size,
            runs=args.runs,
            synchronise=lambda: _synchronise(device),
        ),
    }


def _weights_gib(pipe: Any) -> dict[str, float]:
    """Resident weights per component (the IP-Adapter's live in the UNet)."""
    sizes = {}
    for name in ("unet", "text_encoder", "text_encoder_2", "vae", "image_encoder"):
        module = getattr(pipe, name, None)
        if module is not None:
            total = sum(p.numel() * p.element_size() for p in module.parameters())
            sizes[name] = round(total / GiB, 3)
    sizes["total"] = round(sum(sizes.values()), 3)
    return sizes


def _synchronise(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reserved(device: Any) -> int:
    import torch

    return int(torch.cuda.max_memory_reserved(device)) if device.type == "cuda" else 0


def run_variant(
    variant: str, dirs: tuple[Path, Path, Path], args: argparse.Namespace
) -> dict[str, Any]:
    """One variant in a fresh interpreter, so start-up and memory are its own."""
    argv = [
        sys.executable,
        "-m",
        "bench.sdxl_gpu",
        "--child",
        "--variant",
        variant,
        "--model-dir",
        str(dirs[0]),
        "--ip-dir",
        str(dirs[1]),
        "--checker-dir",
        str(dirs[2]),
        "--size",
        str(args.size),
        "--steps",
        str(args.steps),
        "--runs",
        str(args.runs),
        "--device",
        args.device,
        "--batches",
        ",".join(map(str, args.batches)),
        "--schedulers",
        ",".join(args.schedulers),
        *(["--few-step"] if args.few_step else []),
        "--peaks",
        ",".join(f"{pictures}x{side}" for pictures, side in args.peaks),
        "--started-at",
        repr(time.time()),
    ]
    # A fresh inductor cache per variant: a cache left by an earlier variant
    # or run would make its start to ready (the warm-up's compilation) look
    # shorter than a new machine's.
    cache = tempfile.mkdtemp(prefix=f"inductor-{variant.replace('+', '-')}-")
    environment = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "TORCHINDUCTOR_CACHE_DIR": cache,
    }
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            check=False,
            timeout=args.timeout,
            cwd=REPO_ROOT,
            env=environment,
        )
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stdout + done.stderr)[-3000:]
        return {"variant": variant, "error": f"exit status {done.returncode}", "log_tail": tail}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def verdicts(result: dict[str, Any]) -> dict[str, bool]:
    """Each target met or not (GPU memory: the allocator's peak reservation)."""
    return {
        "seconds_per_image": result["seconds_per_image"] <= TARGETS["seconds_per_image"],
        "peak_gib": result["peak_reserved_gib"] <= TARGETS["peak_gib"],
        "start_to_ready_s": result["start_to_ready_s"] <= TARGETS["start_to_ready_s"],
    }


def _machine() -> dict[str, Any]:
    import diffusers
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "gpu": gpu,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "diffusers": diffusers.__version__,
        "cpu_count": os.cpu_count(),
    }


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """The JSON document, printed as a table too."""
    for result in results:
        if "error" not in result and not args.tiny:
            result["meets_targets"] = verdicts(result)
    document = {
        "benchmark": "sdxl_gpu",
        "miniature": args.tiny,
        "image_encoder": None if args.tiny else args.image_encoder,
        "workload": {"size": args.size, "steps": args.steps, "batch": 1, "runs": args.runs},
        "cases": {
            "batches": list(args.batches),
            "schedulers": list(args.schedulers),
            "few_step": args.few_step,
            "peaks": [f"{pictures}x{side}" for pictures, side in args.peaks],
        },
        "targets": TARGETS,
        "machine": _machine(),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "results": results,
    }
    print(f"{'variant':<14}{'s/image':>9}{'ms/step':>9}{'peak GiB':>10}{'ready s':>9}")
    for r in results:
        if "error" in r:
            print(f"{r['variant']:<14} failed: {r['error']}\n{r['log_tail']}")
            continue
        print(
            f"{r['variant']:<14}{r['seconds_per_image']:>9.3f}{r['per_step_ms']:>9.1f}"
            f"{r['peak_reserved_gib']:>10.2f}{r['start_to_ready_s']:>9.1f}"
        )
        for batch, figures in r.get("batches", {}).items():
            print(f"  batch {batch}: {figures['seconds_per_image']:.3f} s/image")
        for name, figures in r.get("schedulers", {}).items():
            print(f"  {name}: {figures['seconds_per_image']:.3f} s/image")
        for name, figures in r.get("peaks", {}).items():
            print(f"  peak at {name}: {figures['peak_gib']:.2f} GiB")
        if "few_step" in r:
            print(f"  few-step recipe: {r['few_step']['seconds_per_image']:.3f} s/image")
        if "safety" in r:
            print(f"  safety checker: {r['safety']['seconds_per_picture']:.4f} s/picture")
    return document


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.sdxl_gpu", description=__doc__)
    add = parser.add_argument
    add("--tiny", action="store_true", help="in miniature: builtin:tiny, 128 px, 2 steps, CPU")
    add("--variants", help="comma-separated, e.g. bf16,fp16+compile (default: all for the device)")
    add(
        "--image-encoder",
        choices=sorted(IMAGE_ENCODERS),
        default="vit-h",
        help="vit-h: ip-adapter_sdxl_vit-h (default); vit-bigg: ip-adapter_sdxl",
    )
    add("--size", type=int)
    add("--steps", type=int)
    add("--runs", type=int, default=3)
    add("--device", help="cuda or cpu (default: cuda for full size, cpu for --tiny)")
    add("--batches", help="pictures per call, e.g. 1,2,4 (default: 1,2,4 on a GPU, 1 on a CPU)")
    add("--schedulers", help="e.g. DDIMScheduler,DPMSolverMultistepScheduler+karras")
    add("--few-step", action="store_true", help="also time the few-step recipe (on a GPU: always)")
    add(
        "--peaks",
        help="memory peaks of PICTURESxSIDE calls, e.g. 4x1024,1x2048 (the default on a GPU)",
    )
    add("--workdir", type=Path, help="where the random weights are saved (kept for reruns)")
    add("--results-dir", type=Path, default=RESULTS_DIR)
    add("--timeout", type=float, default=900.0, help="seconds per variant")
    add("--child", action="store_true", help=argparse.SUPPRESS)
    add("--variant", help=argparse.SUPPRESS)
    add("--model-dir", help=argparse.SUPPRESS)
    add("--ip-dir", help=argparse.SUPPRESS)
    add("--checker-dir", help=argparse.SUPPRESS)
    add("--started-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.size = args.size or (128 if args.tiny else 1024)
    args.steps = args.steps or (2 if args.tiny else SERVICE_STEPS)
    args.device = args.device or ("cpu" if args.tiny else "cuda")
    default = CPU_VARIANTS if args.device == "cpu" else GPU_VARIANTS
    args.variants = tuple(args.variants.split(",")) if args.variants else default
    gpu = args.device != "cpu"
    batches = args.batches or ("1,2,4" if gpu else "1")
    args.batches = tuple(int(b) for b in batches.split(","))
    schedulers = GPU_SCHEDULERS if args.schedulers is None and gpu else args.schedulers or ""
    args.schedulers = tuple(name for name in schedulers.split(",") if name)
    args.few_step = args.few_step or gpu
    peaks = GPU_PEAKS if args.peaks is None and gpu else args.peaks or ""
    args.peaks = tuple(
        (int(pictures), int(side))
        for pictures, side in (peak.split("x") for peak in peaks.split(",") if peak)
    )
    return args


def _weights(args: argparse.Namespace) -> tuple[Path, Path]:
    name = "tiny" if args.tiny else f"sdxl-{args.image_encoder}"
    root = (args.workdir or Path(os.environ.get("TMPDIR", "/tmp")) / "sdxl_gpu_bench") / name
    model_dir, ip_dir = root / "model", root / "ip_adapter"
    if (model_dir / "model_index.json").exists() and ip_dir.exists():
        return model_dir, ip_dir
    started = time.perf_counter()
    if args.tiny:
        dirs = prepare_tiny(root)
    else:
        dirs = build_full_size(root, args.image_encoder, args.device)
    print(f"random weights saved to {root} in {time.perf_counter() - started:.1f} s")
    return dirs


def main(argv: Sequence[str] | None = None) -> int:
    """Run every variant and write the results; 1 if any variant failed."""
    args = parse_args(argv)
    if args.child:
        print(json.dumps(measure(args)), flush=True)
        return 0
    from bench.safety_cases import build_checker

    model_dir, ip_dir = _weights(args)
    checker_dir = build_checker(model_dir.parent, tiny=args.tiny, device=args.device)
    dirs = (model_dir, ip_dir, checker_dir)
    results = [run_variant(variant, dirs, args) for variant in args.variants]
    document = report(results, args)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"sdxl_gpu{'-tiny' if args.tiny else ''}-{stamp}.json"
    path = args.results_dir / name
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"results written to {path}")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
