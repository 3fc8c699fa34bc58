"""Other schedulers and the few-step recipe, timed in a variant's process after its main figures.

Every case first draws once untimed, so a compilation or a first allocation
is never averaged into its figure. Other schedulers run at the same step
count; the few-step recipe is what a distilled LoRA runs: 4 steps with
guidance 1 (no unconditional half) and a matching scheduler. A fused LoRA
adds no work to a step, so the recipe is timed without one; random weights
draw noise at any step count, so only the time is meaningful.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any

FEW_STEP = {"scheduler": "LCMScheduler", "steps": 4, "guidance_scale": 1.0}
KARRAS_SUFFIX = "+karras"


def _seconds(generator: Any, job: Any, avatar: Any, runs: int, device: Any) -> float:
    """The median seconds of `runs` draws of `job` (seeded by run), after one untimed."""
    generator.generate(job, avatar)
    device.synchronise()
    seconds = []
    for run in range(runs):
        started = time.perf_counter()
        generator.generate(dataclasses.replace(job, seed=run), avatar)
        device.synchronise()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def measure_cases(
    generator: Any, config: Any, spec: Any, avatar: Any, args: Any, device: Any
) -> dict[str, Any]:
    """Schedulers (``--schedulers``) and the few-step recipe (``--few-step``); their figures."""
    from pipeline.engine.runtime.schedulers import configure_scheduler

    figures: dict[str, Any] = {}
    own = generator.pipeline.scheduler
    try:
        for name in args.schedulers:
            scheduler, karras = name.removesuffix(KARRAS_SUFFIX), name.endswith(KARRAS_SUFFIX)
            chosen = dataclasses.replace(config, scheduler=scheduler, scheduler_karras=karras)
            configure_scheduler(generator.pipeline, chosen)
            seconds = _seconds(generator, spec, avatar, args.runs, device)
            figures.setdefault("schedulers", {})[name] = {"seconds_per_picture": round(seconds, 3)}
        if args.few_step:
            recipe = dataclasses.replace(config, scheduler=FEW_STEP["scheduler"])
            configure_scheduler(generator.pipeline, recipe)
            job = dataclasses.replace(
                spec,
                num_inference_steps=FEW_STEP["steps"],
                guidance_scale=FEW_STEP["guidance_scale"],
            )
            seconds = _seconds(generator, job, avatar, args.runs, device)
            figures["few_step"] = {**FEW_STEP, "seconds_per_picture": round(seconds, 3)}
    finally:
        generator.pipeline.scheduler = own
    return figures
