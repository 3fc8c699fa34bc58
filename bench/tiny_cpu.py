"""`builtin:tiny` on the CPU: the cost of one denoising step and of one job.

A 2-step and a 4-step 128x128 generation, each repeated, give the cost of a
step (their difference over two) and the fixed cost of a job (text and image
encoding, VAE decode, conversion: the 2-step time less two steps). The best
of the repeats is used: load from elsewhere on the machine only ever adds
time, and torch's two threads suffer badly from it. Runs in a
process of its own (``python -m bench.tiny_cpu OUT.json``) so that torch never
enters the harness and a hang is cut off by the harness's time limit.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from PIL import Image

from bench.procs import ChildFailed, Children, base_environment
from pipeline.spec import GenerationSpec, JobKind

SIDE = 128
STEP_COUNTS = (2, 4)
REPEATS = 7


def _spec(steps: int) -> GenerationSpec:
    return GenerationSpec(
        kind=JobKind.MEMORY,
        prompt="a lighthouse on a cliff at dusk",
        style_prompt="highest quality, monochrome, professional sketch",
        negative_prompt="error, glitch, mistake",
        num_inference_steps=steps,
        ip_adapter_scale=0.33,
        guidance_scale=5.0,
        seed=1234,
        width=SIDE,
        height=SIDE,
    )


def _samples_s(generator: Any, image: Image.Image, repeats: int) -> dict[int, list[float]]:
    """Times of each step count; the counts alternate, so a burst of load from
    elsewhere on the machine falls on both rather than on one."""
    for steps in STEP_COUNTS:
        generator.generate(_spec(steps), image)  # the first call pays for allocation
    samples: dict[int, list[float]] = {steps: [] for steps in STEP_COUNTS}
    for _ in range(repeats):
        for steps in STEP_COUNTS:
            start = time.perf_counter()
            generator.generate(_spec(steps), image)
            samples[steps].append(time.perf_counter() - start)
    return samples


def measure(repeats: int = REPEATS) -> dict[str, Any]:
    """Import, load and per-step / per-job times in milliseconds."""
    start = time.perf_counter()
    import torch

    from pipeline.config import PipelineConfig
    from pipeline.factory import create_generator

    imported = time.perf_counter()
    generator = create_generator(PipelineConfig(model_path="builtin:tiny", device="cpu"))
    generator.load()
    loaded = time.perf_counter()
    image = Image.linear_gradient("L").convert("RGB").resize((512, 512))
    samples = _samples_s(generator, image, repeats)
    two, four = (min(samples[steps]) for steps in STEP_COUNTS)
    per_step = (four - two) / 2
    return {
        "side": SIDE,
        "repeats": repeats,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "import_s": round(imported - start, 2),
        "load_s": round(loaded - imported, 2),
        "job_2_steps_ms": round(two * 1000, 1),
        "job_4_steps_ms": round(four * 1000, 1),
        "per_step_ms": round(per_step * 1000, 1),
        "per_job_fixed_ms": round((two - 2 * per_step) * 1000, 1),
        "median_ms": {
            str(steps): round(statistics.median(times) * 1000, 1)
            for steps, times in samples.items()
        },
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def run(children: Children, repeats: int = REPEATS, timeout_s: float = 300.0) -> dict[str, Any]:
    """Measure in a child process, bounded by `timeout_s`; its figures."""
    out = children.log_dir / "tiny_cpu.json"
    argv = [sys.executable, "-m", "bench.tiny_cpu", str(out), str(repeats)]
    child = children.start("tiny-cpu", argv, base_environment({}))
    try:
        status = child.popen.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"builtin:tiny took over {timeout_s:.0f} s") from None
    finally:
        children.stop(child)
    if status != 0:
        raise ChildFailed(f"bench.tiny_cpu exited with status {status}:\n{child.log_tail()}")
    figures: dict[str, Any] = json.loads(out.read_text())
    print(
        f"  builtin:tiny {SIDE}x{SIDE} on the CPU: {figures['per_step_ms']:.0f} ms a step, "
        f"{figures['per_job_fixed_ms']:.0f} ms fixed per job ({figures['job_2_steps_ms']:.0f} ms "
        f"at 2 steps, {figures['job_4_steps_ms']:.0f} ms at 4), load {figures['load_s']:.1f} s",
        flush=True,
    )
    return figures


def main(argv: list[str]) -> int:
    """Write the figures as JSON to ``argv[0]``."""
    repeats = int(argv[1]) if len(argv) > 1 else REPEATS
    Path(argv[0]).write_text(json.dumps(measure(repeats), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
