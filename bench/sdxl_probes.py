"""Three questions a GPU answers that a CPU cannot: stops, waits and batch effects.

- **Stop latency**: a job is stopped once a third of its steps were
  queued; how long until the generation gives up, in seconds and in steps,
  and how many steps the host queued after the stop (the service's promise:
  within two steps, CUDA graphs included).
- **Waits per step** for each scheduler: torch's CUDA sync debug mode warns
  at every call that makes the host wait for the GPU; the warnings of a job
  of ``2n`` steps minus those of ``n`` steps, over ``n``, are the waits each
  step adds (the copies at a job's start and end cancel out).
- **Batch against single**: picture i of a batch and the one-picture job of
  its seed, compared by PSNR (on a CPU they are the same to 1/255; on a GPU
  kernels are chosen per batch size).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import threading
import time
import warnings
from typing import Any

import numpy as np

STOP_STEPS_AT_LEAST = 20
SYNC_STEPS = 4
STOPPED = re.compile(r"after step (\d+) of (\d+)")


def stop_figures(
    service: Any, unet: Any, spec: Any, avatar: Any, per_step_ms: float, device: Any
) -> dict[str, Any]:
    """Stop a job once its UNet has been called for a third of its steps; how soon it ends."""
    from bench.sdxl_child import run_in_thread
    from pipeline.api.errors import GenerationStopped

    steps = max(spec.num_inference_steps, STOP_STEPS_AT_LEAST)
    job = dataclasses.replace(spec, num_inference_steps=steps, seed=11)
    calls: list[float] = []
    reached, stop = threading.Event(), threading.Event()

    def count(module: Any, args: Any) -> None:
        calls.append(time.perf_counter())
        if len(calls) == steps // 3:
            reached.set()

    hook = unet.register_forward_pre_hook(count)
    try:
        thread, outcome = run_in_thread(lambda: service.draw(job, avatar, stop))
        reached.wait()
        set_at, queued_at_stop = time.perf_counter(), len(calls)
        stop.set()
        thread.join()
        latency = time.perf_counter() - set_at
    finally:
        hook.remove()
    device.synchronise()
    [result] = outcome
    figures: dict[str, Any] = {
        "steps": steps,
        "steps_queued_when_stopped": queued_at_stop,
        "steps_queued_after_the_stop": len(calls) - queued_at_stop,
        "latency_s": round(latency, 4),
        "latency_in_steps": round(latency * 1000 / per_step_ms, 2) if per_step_ms > 0 else None,
    }
    if isinstance(result, GenerationStopped):
        found = STOPPED.search(str(result))
        figures["steps_done_reported"] = int(found.group(1)) if found else None
    else:
        figures["error"] = f"not stopped: {result!r}"
    return figures


def sync_figures(
    generator: Any, config: Any, spec: Any, avatar: Any, args: argparse.Namespace, device: Any
) -> dict[str, Any] | None:
    """Per scheduler, the host's waits for the GPU per denoising step (``None`` on a CPU)."""
    if not device.cuda or not args.schedulers_sync:
        return None
    from pipeline.api.config import SCHEDULERS
    from pipeline.engine.runtime.schedulers import configure_scheduler

    torch = device.torch
    own = generator.pipeline.scheduler
    figures: dict[str, Any] = {}
    try:
        for name in SCHEDULERS:
            configure_scheduler(generator.pipeline, dataclasses.replace(config, scheduler=name))
            short = dataclasses.replace(spec, num_inference_steps=SYNC_STEPS)
            long = dataclasses.replace(spec, num_inference_steps=2 * SYNC_STEPS)
            generator.generate(short, avatar)  # what a first job of a scheduler sets up
            counts = [
                _waits(torch, lambda job=job: generator.generate(job, avatar))
                for job in (short, long)
            ]
            figures[name] = {
                "waits_per_step": round((counts[1] - counts[0]) / SYNC_STEPS, 2),
                f"waits_in_a_{SYNC_STEPS}_step_job": counts[0],
            }
    finally:
        generator.pipeline.scheduler = own
    return figures


def _waits(torch: Any, call: Any) -> int:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            call()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def psnr_figures(
    generator: Any, spec: Any, avatar: Any, args: argparse.Namespace
) -> dict[str, Any]:
    """Picture i of a batch against the one-picture job of seed + i."""
    pictures = args.psnr_pictures
    job = dataclasses.replace(spec, num_images=pictures, num_inference_steps=args.psnr_steps)
    batch = generator.generate(job, avatar)
    values, worst = [], 0
    for index, picture in enumerate(batch):
        single_job = dataclasses.replace(job, num_images=1, seed=job.seed + index)
        [single] = generator.generate(single_job, avatar)
        a = np.asarray(picture, dtype=np.float64)
        b = np.asarray(single, dtype=np.float64)
        worst = max(worst, int(np.abs(a - b).max()))
        mse = float(np.mean((a - b) ** 2))
        values.append(math.inf if mse == 0 else 10 * math.log10(255**2 / mse))
    finite = [v for v in values if math.isfinite(v)]
    return {
        "pictures": pictures,
        "steps": args.psnr_steps,
        "psnr_db_min": round(min(finite), 2) if finite else "identical",
        "psnr_db_mean": round(sum(finite) / len(finite), 2) if finite else "identical",
        "identical_pictures": len(values) - len(finite),
        "largest_pixel_difference": worst,
    }
