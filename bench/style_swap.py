"""Styles: what swapping a style's LoRA into the UNet's slot costs.

    python -m bench.style_swap                 # builtin:tiny on this CPU, SDXL's sizes
    python -m bench.style_swap --compile       # also the compiled graph count

Figures, printed and written to ``bench/results/style_swap.json``:

- one swap on the CPU with ``builtin:tiny``, from the host cache and from
  disk (the file read, checked and converted each time: the host cache
  holds nothing), the median of ``--repeats``;
- the bytes a swap copies for rank-32, -64 and -128 LoRAs on SDXL's slot
  layers, from the shapes of SDXL base 1.0's UNet built on the meta device
  (no weights), in half precision; for the attention projections (the
  usual LoRA) and for every kind a slot may hold;
- the time diffusers' hotswap spends per swap besides the copies (its
  bookkeeping: passes over the UNet's state dict, a lookup per LoRA
  tensor), on a sliver of SDXL's UNet (all its modules, each a few
  channels wide) on this CPU;
- the expected swap time on an H100: that bookkeeping plus the bytes at
  host-to-device bandwidths from pinned memory (an estimate until a GPU
  measures it);
- the resident memory (VmRSS) before and after 200 swaps on the tiny model;
- with ``--compile``: the graphs torch compiled at warm-up and after jobs in
  three styles at three strengths (the eager backend, as the compile-once
  tests count them).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Container
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
RANKS = (32, 64, 128)
ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")
# Host-to-device copies from pinned memory: PCIe Gen5 x16 (an H100's) as
# usually measured, and a conservative figure for a busy or Gen4 host.
BANDWIDTHS_GBS = (25.0, 12.0)
SWAPS_FOR_MEMORY = 200


def _median_ms(action: Callable[[], object], repeats: int) -> dict[str, float]:
    """Median wall and CPU milliseconds of `action` (CPU time is what a busy
    shared machine distorts least)."""
    wall, cpu = [], []
    for _ in range(repeats):
        started, used = time.perf_counter(), time.process_time()
        action()
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - used) * 1000)
    return {
        "wall_ms": round(statistics.median(wall), 2),
        "cpu_ms": round(statistics.median(cpu), 2),
    }


def _resident_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _tiny(folder: Path, rank: int, compile_unet: bool = False) -> tuple[Any, list[Any]]:
    from pipeline.api.config import BUILTIN_TINY, PipelineConfig
    from pipeline.api.factory import create_generator
    from pipeline.api.lora_files import file_digest, inspect_lora, slot_for
    from pipeline.api.spec import GenerationSpec, JobKind
    from pipeline.builtin.tiny_lora import save_tiny_lora

    targets = (ATTENTION, ("to_q", "to_v"), ("to_k", "to_out.0"))
    paths = [
        save_tiny_lora(folder / f"r{rank}-{i}.safetensors", seed=i, rank=rank, targets=t)
        for i, t in enumerate(targets)
    ]
    digests = {p: file_digest(p) for p in paths}
    config = PipelineConfig(
        model_path=BUILTIN_TINY,
        warmup=compile_unet,
        torch_compile=compile_unet,
        torch_compile_backend="eager" if compile_unet else None,
        style_slot=slot_for(inspect_lora(p) for p in paths),
        style_loras=tuple((p.stem, str(p), digests[p]) for p in paths),
    )
    generator = create_generator(config)
    generator.load()
    jobs = [
        GenerationSpec(
            kind=JobKind.MEMORY,
            prompt="a lake",
            style_prompt="",
            negative_prompt="",
            num_inference_steps=1,
            ip_adapter_scale=0.5,
            guidance_scale=5.0,
            seed=1,
            width=64,
            height=64,
            style=p.stem,
            style_strength=strength,
            style_digest=digests[p],
            style_lora=str(p),
            style_lora_scale=strength,
        )
        for p in paths
        for strength in (0.5, 1.0, 1.5)
    ]
    return generator, jobs


def tiny_swaps(folder: Path, repeats: int) -> dict[str, Any]:
    """Swap times and resident memory on builtin:tiny."""
    out: dict[str, Any] = {}
    for rank in (8, 64):
        generator, jobs = _tiny(folder, rank)
        slot = generator.style_slot
        # Every job another LoRA than the one before, at one of three strengths.
        turn = iter(jobs[(i * 4) % len(jobs)] for i in range(10**9))

        def swap(slot: Any = slot, turn: Any = turn) -> None:
            slot.apply(next(turn))

        for _ in range(len(jobs)):
            swap()
        cached = _median_ms(swap, repeats)
        budget = slot.cache.max_bytes
        slot.cache.max_bytes = 0
        slot.cache._entries.clear()
        from_disk = _median_ms(swap, repeats)
        slot.cache.max_bytes = budget
        out[f"rank_{rank}"] = {
            "slot_bytes": slot.slot_bytes,
            "swap_from_host_cache": cached,
            "swap_from_disk": from_disk,
        }
        if rank == 64:
            gc.collect()
            before = _resident_bytes()
            swaps = slot.swaps
            for _ in range(SWAPS_FOR_MEMORY):
                swap()
            gc.collect()
            out["resident_memory"] = {
                "swaps": slot.swaps - swaps,
                "applies": SWAPS_FOR_MEMORY,
                "vmrss_mib_before": round(before / 2**20, 1),
                "vmrss_mib_after": round(_resident_bytes() / 2**20, 1),
            }
    return out


def sdxl_swap(repeats: int) -> dict[str, Any]:
    """Bytes per swap on SDXL's slot layers, and diffusers' bookkeeping per swap."""
    import torch

    from bench.sdxl_arch import SDXL_UNET
    from pipeline.api.lora_files import SLOT_KINDS
    from pipeline.engine.untyped import diffusers

    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel(**SDXL_UNET)
    out: dict[str, Any] = {}
    for label, kinds in (("attention", ATTENTION), ("every_slot_kind", SLOT_KINDS)):
        shapes = _linear_shapes(unet, kinds).values()
        out[label] = {
            "layers": len(shapes),
            "bytes_fp16": {r: sum(r * (o + i) * 2 for o, i in shapes) for r in RANKS},
        }
    out["bookkeeping"] = _bookkeeping(repeats)
    return out


def _linear_shapes(unet: Any, kinds: Container[str]) -> dict[str, tuple[int, int]]:
    """(out, in) of each linear layer of `unet` whose LoRA kind is in `kinds`."""
    import torch

    from pipeline.api.lora_files import layer_kind

    return {
        name: (m.out_features, m.in_features)
        for name, m in unet.named_modules()
        if isinstance(m, torch.nn.Linear) and layer_kind(name) in kinds
    }


# SDXL base 1.0's UNet with every module and tensor it has, each a sliver
# wide: diffusers' and peft's per-swap work outside the copies depends on
# how many modules and tensors there are, not on their sizes.
SDXL_SLIVER = {
    "block_out_channels": (32, 64, 128),
    "attention_head_dim": (1, 2, 4),
    "cross_attention_dim": 64,
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 6 * 8 + 64,
    "norm_num_groups": 8,
}


def _bookkeeping(repeats: int) -> dict[str, float]:
    """diffusers' hotswap of attention LoRAs of rank 32, 64 and 128 in turn
    into a slot of rank 128 on a sliver of SDXL's UNet: its per-swap work
    besides copying the weights."""
    import torch

    from bench.sdxl_arch import SDXL_UNET
    from pipeline.engine.untyped import diffusers

    unet = diffusers.UNet2DConditionModel(**{**SDXL_UNET, **SDXL_SLIVER})

    shapes = _linear_shapes(unet, ATTENTION)

    def lora(rank: int) -> dict[str, torch.Tensor]:
        state = {}
        for name, (o, i) in shapes.items():
            state[f"unet.{name}.lora_A.weight"] = torch.randn(rank, i)
            state[f"unet.{name}.lora_B.weight"] = torch.randn(o, rank)
        return state

    unet.enable_lora_hotswap(target_rank=128)
    unet.load_lora_adapter(lora(128), prefix="unet", adapter_name="style")
    states = [lora(32), lora(64), lora(128)]
    turn = iter(states[i % 3] for i in range(10**9))
    timed = _median_ms(
        lambda: unet.load_lora_adapter(
            next(turn), prefix="unet", adapter_name="style", hotswap=True
        ),
        repeats,
    )
    return {"layers": len(shapes), **timed}


def compile_counts(folder: Path) -> dict[str, int]:
    """Graphs compiled at warm-up, and after jobs in 3 styles at 3 strengths."""
    import torch
    from PIL import Image
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    generator, jobs = _tiny(folder, 8, compile_unet=True)
    warmed = int(counters["stats"]["unique_graphs"])
    for job in jobs:
        generator.generate(job, Image.new("RGB", (64, 64), "gray"))
    return {"after_warm_up": warmed, "after_9_style_jobs": int(counters["stats"]["unique_graphs"])}


def main(argv: list[str] | None = None) -> int:
    """Measure, print, write the JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.style_swap", description=__doc__)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--compile", action="store_true", help="also count compiled graphs")
    parser.add_argument("--results", type=Path, default=REPO_ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        folder = Path(workdir)
        result: dict[str, Any] = {"tiny_cpu": tiny_swaps(folder, args.repeats)}
        result["sdxl"] = sdxl_swap(max(3, args.repeats // 3))
        bookkeeping = result["sdxl"]["bookkeeping"]["cpu_ms"]
        result["h100_estimate_ms"] = {
            f"rank_{rank}": {
                f"{gbs:g}_GBps": round(bookkeeping + size / (gbs * 1e9) * 1000, 1)
                for gbs in BANDWIDTHS_GBS
            }
            for rank, size in result["sdxl"]["attention"]["bytes_fp16"].items()
        }
        if args.compile:
            result["compiled_graphs"] = compile_counts(folder)
    print(json.dumps(result, indent=2))
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "style_swap.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
