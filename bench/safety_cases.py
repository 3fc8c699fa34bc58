"""The safety checker's cost: seconds per picture, checked as the service checks.

The full-size checker is ``CompVis/stable-diffusion-safety-checker``'s
architecture (CLIP ViT-L/14 vision tower and its projection, about 304 M
parameters) with random weights, since speed does not depend on them; the
miniature is a tiny CLIP for CPU runs. Both are saved in the CompVis layout
and read through :class:`pipeline.engine.safety_checker.SafetyChecker`, then timed
on decoded pictures of the benchmark's size (resizing to 224 px is part of
the cost).

    python -m bench.safety_cases --size 1024 --device cpu          # full size
    python -m bench.safety_cases --tiny                            # miniature

``bench.sdxl_gpu`` times it beside each variant (``safety`` in its results).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# CompVis/stable-diffusion-safety-checker's config.json (openai/clip-vit-large-patch14).
FULL_VISION: dict[str, Any] = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_attention_heads": 16,
    "num_hidden_layers": 24,
    "image_size": 224,
    "patch_size": 14,
    "hidden_act": "quick_gelu",
}
FULL_TEXT: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
}
FULL_PROJECTION = 768
TINY_VISION: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "image_size": 32,
    "patch_size": 8,
}
TINY_TEXT: dict[str, Any] = {
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_attention_heads": 2,
    "num_hidden_layers": 1,
}
TINY_PROJECTION = 16
BATCH = 4


def build_checker(directory: Path, *, tiny: bool, device: str = "cpu") -> Path:
    """Save a random-weight checker in the CompVis layout under `directory` (kept for reruns)."""
    import torch

    from pipeline.engine.safety_checker import checker_class, processor_class
    from pipeline.engine.untyped import transformers

    folder = directory / ("safety_checker_tiny" if tiny else "safety_checker")
    if (folder / "config.json").exists():
        return folder
    vision, text, projection = (
        (TINY_VISION, TINY_TEXT, TINY_PROJECTION)
        if tiny
        else (FULL_VISION, FULL_TEXT, FULL_PROJECTION)
    )
    config = transformers.CLIPConfig(
        text_config=text, vision_config=vision, projection_dim=projection
    )
    with torch.device(device):
        model = checker_class()(config)
    if not tiny:
        model = model.half()  # as the hub's fp16 files, half the bytes to read
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    side = vision["image_size"]
    processor_class()(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side}
    ).save_pretrained(folder)
    return folder


def measure_safety(
    folder: Path,
    *,
    device: str,
    dtype: str | None,
    size: int,
    runs: int,
    synchronise: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Load the checker at `folder` and time it on `size` x `size` pictures."""
    import numpy as np
    from PIL import Image

    from pipeline.engine.safety_checker import SafetyChecker

    checker = SafetyChecker(str(folder), device=device, dtype=dtype)
    checker.load()
    rng = np.random.default_rng(0)
    pictures = [
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(BATCH)
    ]
    checker.check(pictures[:1])  # the first call pays for lazy set-up

    def timed(batch: list[Any]) -> float:
        seconds = []
        for _ in range(runs):
            started = time.perf_counter()
            checker.check(batch)
            synchronise()
            seconds.append(time.perf_counter() - started)
        return statistics.median(seconds) / len(batch)

    return {
        "safety": {
            "parameters": checker.parameters,
            "size": size,
            "load_seconds": round(checker.load_seconds or 0.0, 3),
            "seconds_per_picture": round(timed(pictures[:1]), 4),
            f"seconds_per_picture_batch_{BATCH}": round(timed(pictures), 4),
        }
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Build (once) and time a checker; print the figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.safety_cases", description=__doc__)
    parser.add_argument("--tiny", action="store_true", help="the miniature checker")
    parser.add_argument("--size", type=int, default=1024, help="picture side in pixels")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", help="float32, float16 or bfloat16 (default: by device)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/safety_bench"))
    args = parser.parse_args(argv)
    folder = build_checker(args.workdir, tiny=args.tiny, device=args.device)
    figures = measure_safety(
        folder, device=args.device, dtype=args.dtype, size=args.size, runs=args.runs
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
