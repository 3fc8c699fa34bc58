"""Extra timings of the GPU benchmark, run in a variant's process after its main workload.

Every case first draws once untimed, so a compilation or a first allocation
is never averaged into its figure. Batch sizes (pictures per call), the
memory peaks of the largest requests (``--peaks``: four pictures at 1024²,
one at 2048²), other schedulers at the same step count, and the few-step
recipe: a distilled-LoRA setup runs at 4 steps with guidance 1
(no unconditional half) and a matching scheduler. A fused LoRA adds no work to
a step, so the recipe is timed without one; random weights draw noise at
any step count, so only the time is meaningful.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any

FEW_STEP = {"scheduler": "LCMScheduler", "steps": 4, "guidance_scale": 1.0}
KARRAS_SUFFIX = "+karras"


def _timed(runs: int, call: Callable[[int], object], synchronise: Callable[[], None]) -> float:
    """The median seconds of `runs` calls of ``call(run)``."""
    seconds = []
    for run in range(runs):
        start = time.perf_counter()
        call(run)
        synchronise()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def _untimed(generator: Any, job: Any, avatar: Any, synchronise: Callable[[], None]) -> None:
    """One call before the timed ones: whatever it compiles or allocates is not timed."""
    generator.generate(job, avatar)
    synchronise()


def _seeded(generator: Any, job: Any, avatar: Any) -> Callable[[int], object]:
    """A call drawing `job` with the run's index as its seed."""
    return lambda run: generator.generate(dataclasses.replace(job, seed=run), avatar)


def measure_cases(
    generator: Any,
    config: Any,
    spec: Any,
    avatar: Any,
    args: Any,
    synchronise: Callable[[], None],
    peak_gib: Callable[[], float],
    reset_peak: Callable[[], None],
) -> dict[str, Any]:
    """Batches, schedulers and the few-step recipe on a loaded generator; their figures."""
    from pipeline.engine.runtime.schedulers import configure_scheduler

    figures: dict[str, Any] = {}
    for batch in (b for b in args.batches if b != 1):
        job = dataclasses.replace(spec, num_images=batch)
        _untimed(generator, job, avatar, synchronise)
        seconds = _timed(
            args.runs,
            _seeded(generator, job, avatar),
            synchronise,
        )
        figures.setdefault("batches", {})[str(batch)] = {
            "seconds_per_call": round(seconds, 3),
            "seconds_per_image": round(seconds / batch, 3),
            "peak_gib": round(peak_gib(), 2),
        }
    for pictures, side in args.peaks:
        job = dataclasses.replace(spec, num_images=pictures, width=side, height=side)
        _untimed(generator, job, avatar, synchronise)
        reset_peak()
        seconds = _timed(1, _seeded(generator, job, avatar), synchronise)
        figures.setdefault("peaks", {})[f"{pictures}x{side}"] = {
            "seconds_per_call": round(seconds, 3),
            "peak_gib": round(peak_gib(), 2),
        }
    own = generator.pipeline.scheduler
    for name in args.schedulers:
        scheduler, karras = name.removesuffix(KARRAS_SUFFIX), name.endswith(KARRAS_SUFFIX)
        chosen = dataclasses.replace(config, scheduler=scheduler, scheduler_karras=karras)
        configure_scheduler(generator.pipeline, chosen)
        _untimed(generator, spec, avatar, synchronise)
        seconds = _timed(
            args.runs,
            _seeded(generator, spec, avatar),
            synchronise,
        )
        figures.setdefault("schedulers", {})[name] = {"seconds_per_image": round(seconds, 3)}
        generator.pipeline.scheduler = own
    if args.few_step:
        recipe = dataclasses.replace(config, scheduler=FEW_STEP["scheduler"])
        configure_scheduler(generator.pipeline, recipe)
        job = dataclasses.replace(
            spec, num_inference_steps=FEW_STEP["steps"], guidance_scale=FEW_STEP["guidance_scale"]
        )
        _untimed(generator, job, avatar, synchronise)
        seconds = _timed(
            args.runs,
            _seeded(generator, job, avatar),
            synchronise,
        )
        figures["few_step"] = {**FEW_STEP, "seconds_per_image": round(seconds, 3)}
        generator.pipeline.scheduler = own
    return figures
