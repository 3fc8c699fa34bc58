"""`builtin:tiny` on the CPU: the cost of one denoising step and of one job.

A 2-step and a 4-step 128x128 generation, each repeated, give the cost of a
step (their difference over two) and the fixed cost of a job (text and image
encoding, VAE decode, conversion: the 2-step time less two steps). The best
of the repeats is used: load from elsewhere on the machine only ever adds
time, and torch's two threads suffer badly from it. A batch of four pictures
in one call is timed against four one-picture calls, and the tiny model saved
to disk is started in a fresh process to time start to ready. Runs in a
process of its own (``python -m bench.tiny_cpu OUT.json``) so that torch never
enters the harness and a hang is cut off by the harness's time limit.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

from bench.procs import ChildFailed, Children, base_environment
from pipeline.api.spec import GenerationSpec, JobKind

SIDE = 128
STEP_COUNTS = (2, 4)
REPEATS = 7
BATCH = 4
BATCH_STEPS = 2


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


def _batch_vs_singles_s(generator: Any, image: Image.Image, repeats: int) -> tuple[float, float]:
    """Best times of one `BATCH`-picture call and of `BATCH` one-picture calls."""
    single = _spec(BATCH_STEPS)
    batch = dataclasses.replace(single, num_images=BATCH)
    generator.generate(batch, image)  # allocation for the larger tensors
    batched, singles = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        generator.generate(batch, image)
        batched.append(time.perf_counter() - start)
        start = time.perf_counter()
        for i in range(BATCH):
            generator.generate(dataclasses.replace(single, seed=single.seed + i), image)
        singles.append(time.perf_counter() - start)
    return min(batched), min(singles)


def _start_to_ready_s() -> float:
    """A fresh interpreter loading the tiny model from disk: launch to the end of ``load()``."""
    with tempfile.TemporaryDirectory() as directory:
        from pipeline.builtin.tiny import save_tiny

        model_dir, ip_dir = save_tiny(directory)
        out = Path(directory) / "ready.json"
        argv = [sys.executable, "-m", "bench.tiny_cpu", "--ready", str(model_dir), str(ip_dir)]
        started = time.time()
        subprocess.run([*argv, str(out), repr(started)], check=True, timeout=300)
        ready: float = json.loads(out.read_text())["ready_s"]
    return ready


def _ready(model_dir: str, ip_dir: str, out: str, started_at: float) -> None:
    """In the fresh process: load through the service's path, write the time since launch."""
    from pipeline.api.config import PipelineConfig
    from pipeline.api.factory import create_generator

    config = PipelineConfig(model_path=model_dir, ip_adapter_path=ip_dir, device="cpu")
    create_generator(config).load()
    Path(out).write_text(json.dumps({"ready_s": time.time() - started_at}))


def measure(repeats: int = REPEATS) -> dict[str, Any]:
    """Import, load and per-step / per-job times in milliseconds."""
    start = time.perf_counter()
    import torch

    from pipeline.api.config import BUILTIN_TINY, PipelineConfig
    from pipeline.api.factory import create_generator

    imported = time.perf_counter()
    generator = create_generator(PipelineConfig(model_path=BUILTIN_TINY, device="cpu"))
    generator.load()
    loaded = time.perf_counter()
    image = Image.linear_gradient("L").convert("RGB").resize((512, 512))
    samples = _samples_s(generator, image, repeats)
    two, four = (min(samples[steps]) for steps in STEP_COUNTS)
    per_step = (four - two) / 2
    batched, singles = _batch_vs_singles_s(generator, image, max(1, repeats // 2))
    ready = _start_to_ready_s()
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
        "batch": BATCH,
        "batch_steps": BATCH_STEPS,
        "batch_call_ms": round(batched * 1000, 1),
        "single_calls_ms": round(singles * 1000, 1),
        "singles_over_batch": round(singles / batched, 2),
        "start_to_ready_from_disk_s": round(ready, 2),
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
        f"at 2 steps, {figures['job_4_steps_ms']:.0f} ms at 4), load {figures['load_s']:.1f} s; "
        f"{figures['batch']} pictures in one call {figures['batch_call_ms']:.0f} ms, in "
        f"{figures['batch']} calls {figures['single_calls_ms']:.0f} ms "
        f"({figures['singles_over_batch']:.2f}x); start to ready from disk "
        f"{figures['start_to_ready_from_disk_s']:.1f} s",
        flush=True,
    )
    return figures


def main(argv: list[str]) -> int:
    """Write the figures as JSON to ``argv[0]`` (``--ready ...``: the fresh-process load)."""
    if argv[0] == "--ready":
        _ready(argv[1], argv[2], argv[3], float(argv[4]))
        return 0
    repeats = int(argv[1]) if len(argv) > 1 else REPEATS
    Path(argv[0]).write_text(json.dumps(measure(repeats), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
