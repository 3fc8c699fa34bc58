"""One variant of the GPU benchmark, in a process of its own: load as the service does, measure.

The safety checker is loaded first and stays resident, as ``illustrator run``
loads it; then the generator, through ``create_generator(config).load()``
(on a GPU that load proves that the largest request fits). Every figure is
taken through the service's own path: :class:`pipeline.api.safety.CheckedGenerator`
draws and checks. Each section writes what it measured to the ``--out``
file at once, so a variant that runs out of time still leaves its figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.sdxl_cases import measure_cases
from bench.sdxl_probes import psnr_figures, stop_figures, sync_figures

GiB = 1024**3
# A variant's compile part, and torch.compile's mode it stands for.
COMPILE_MODES = {
    "compile": "default",
    "reduce-overhead": "reduce-overhead",
    "max-autotune": "max-autotune",
}


@dataclasses.dataclass(frozen=True)
class Variant:
    """A variant's name, read: ``DTYPE[+MODE][+regional][+vae]``.

    MODE is ``compile`` (torch's default mode), ``reduce-overhead`` or
    ``max-autotune``; a variant without one runs uncompiled.
    """

    name: str
    dtype: str
    mode: str | None
    regional: bool
    vae: bool

    @classmethod
    def parse(cls, name: str) -> Variant:
        """Read `name`; a ValueError names what is not understood."""
        dtype, *parts = name.split("+")
        modes = [COMPILE_MODES[p] for p in parts if p in COMPILE_MODES]
        unknown = [p for p in parts if p not in COMPILE_MODES and p not in ("regional", "vae")]
        if unknown or len(modes) > 1 or dtype not in ("bf16", "fp16", "fp32"):
            raise ValueError(f"variant {name!r}: DTYPE[+compile|+reduce-overhead|+max-autotune]...")
        if not modes and ("regional" in parts or "vae" in parts):
            raise ValueError(f"variant {name!r}: +regional and +vae need a compile mode")
        return cls(name, dtype, modes[0] if modes else None, "regional" in parts, "vae" in parts)


class Partial:
    """The variant's figures so far, written to `path` after each section."""

    def __init__(self, path: Path | None, figures: dict[str, Any]) -> None:
        self.path, self.figures = path, figures

    def add(self, **figures: Any) -> None:
        """Record `figures` and write everything so far."""
        self.figures.update(figures)
        if self.path is not None:
            self.path.write_text(json.dumps(self.figures))


class Device:
    """The device's clock and memory, as the figures need them."""

    def __init__(self, name: str) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(name)
        self.cuda = self.device.type == "cuda"

    def synchronise(self) -> None:
        """Wait for the device, so a time covers the work."""
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def reset_peaks(self) -> None:
        """Start new peak measurements (the reserved peak too)."""
        if self.cuda:
            self.synchronise()
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def peaks_gib(self) -> dict[str, float | None]:
        """The allocator's peaks since the last reset, in GiB (``None`` on a CPU)."""
        if not self.cuda:
            return {"reserved_peak_gib": None, "allocated_peak_gib": None}
        self.synchronise()
        return {
            "reserved_peak_gib": round(self.torch.cuda.max_memory_reserved(self.device) / GiB, 2),
            "allocated_peak_gib": round(self.torch.cuda.max_memory_allocated(self.device) / GiB, 2),
        }


def _config(args: argparse.Namespace, variant: Variant) -> Any:
    from pipeline.api.config import PipelineConfig

    dtypes = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
    compiled = variant.mode is not None
    return PipelineConfig(
        model_path=args.model_dir,
        ip_adapter_path=args.ip_dir,
        dtype=dtypes[variant.dtype],
        device=args.device,
        torch_compile=compiled,
        torch_compile_mode=variant.mode,
        # On a CPU only a named backend compiles: the eager one traces as
        # inductor does, so its graph counts are the GPU's.
        torch_compile_backend="eager" if compiled and args.device == "cpu" else None,
        torch_compile_regional=variant.regional,
        torch_compile_vae=variant.vae,
    )


def measure(args: argparse.Namespace, out: Path | None) -> dict[str, Any]:
    """Load one variant as the service does, then measure it section by section."""
    from PIL import Image

    from pipeline.api.factory import create_generator
    from pipeline.api.safety import CheckedGenerator
    from pipeline.api.spec import GenerationSpec, JobKind
    from pipeline.engine.safety_checker import SafetyChecker

    variant = Variant.parse(args.variant)
    device = Device(args.device)
    partial = Partial(out, {"variant": variant.name, "device": args.device})
    config = _config(args, variant)
    checker = SafetyChecker(args.checker_dir, device=args.device, dtype=config.dtype)
    checker.load()
    generator: Any = create_generator(config)
    generator.load()
    device.synchronise()
    ready_s = time.time() - args.started_at
    load_peaks = device.peaks_gib()
    service = CheckedGenerator(generator, checker)
    partial.add(
        gpu=device.torch.cuda.get_device_name(device.device) if device.cuda else None,
        dtype=variant.dtype,
        compile_mode=variant.mode,
        regional=variant.regional,
        compiled_vae=variant.vae,
        start_to_ready_s=round(ready_s, 2),
        load_seconds=round(generator.load_seconds or 0.0, 2),
        graphs_after_load=generator.graphs_built,
        reserved_peak_gib_at_load=load_peaks["reserved_peak_gib"],
        weights_gib=_weights_gib(generator.pipeline),
        attention_processors=sorted(
            {type(p).__name__ for p in generator.pipeline.unet.attn_processors.values()}
        ),
    )
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
    timing = _timing(service, spec, avatar, args, device)
    partial.add(**timing)
    partial.add(**_peaks(service, spec, avatar, args, device))
    unet = generator.pipeline.unet
    partial.add(stop=stop_figures(service, unet, spec, avatar, timing["per_step_ms"], device))
    partial.add(scheduler_syncs=sync_figures(generator, config, spec, avatar, args, device))
    partial.add(batch_vs_single=psnr_figures(generator, spec, avatar, args))
    partial.add(safety=_safety(checker, generator, spec, avatar, args, device))
    partial.add(**measure_cases(generator, config, spec, avatar, args, device))
    partial.add(graphs_after_all=generator.graphs_built)
    return partial.figures


def _timed(runs: int, call: Callable[[int], object], device: Device) -> list[float]:
    seconds = []
    for run in range(runs):
        started = time.perf_counter()
        call(run)
        device.synchronise()
        seconds.append(time.perf_counter() - started)
    return seconds


def _timing(
    service: Any, spec: Any, avatar: Any, args: argparse.Namespace, device: Device
) -> dict[str, Any]:
    """Seconds per picture (checked, as the service delivers it), per step, pictures per second."""
    graphs = service.graphs_built
    service.draw(spec, avatar)  # untimed: whatever a first call sets up
    whole = _timed(args.runs, _drawing(service, spec, avatar), device)
    half = dataclasses.replace(spec, num_inference_steps=max(1, spec.num_inference_steps // 2))
    halves = _timed(args.runs, _drawing(service, half, avatar), device)
    steps = spec.num_inference_steps - half.num_inference_steps
    per_step = (statistics.median(whole) - statistics.median(halves)) / max(steps, 1)
    figures: dict[str, Any] = {
        "seconds_per_picture": round(statistics.median(whole), 3),
        "seconds_all": [round(s, 3) for s in whole],
        # From two step counts, so the per-job work (text, decode, check) is not in it.
        "per_step_ms": round(1000 * per_step, 2),
        "fixed_per_job_ms": round(1000 * (statistics.median(whole) - per_step * args.steps), 1),
    }
    for batch in args.batches:
        if batch == 1:
            continue
        job = dataclasses.replace(spec, num_images=batch)
        service.draw(job, avatar)
        seconds = statistics.median(_timed(args.runs, _drawing(service, job, avatar), device))
        figures[f"pictures_per_second_batch_{batch}"] = round(batch / seconds, 3)
        figures[f"seconds_per_picture_batch_{batch}"] = round(seconds / batch, 3)
    figures["pictures_per_second_batch_1"] = round(1 / figures["seconds_per_picture"], 3)
    figures["graphs_built_in_timed_jobs"] = service.graphs_built - graphs
    return figures


def _seeded(spec: Any, run: int) -> Any:
    return dataclasses.replace(spec, seed=run)


def _drawing(service: Any, job: Any, avatar: Any) -> Callable[[int], object]:
    """A call drawing `job` with the run's index as its seed."""
    return lambda run: service.draw(_seeded(job, run), avatar)


def _peaks(
    service: Any, spec: Any, avatar: Any, args: argparse.Namespace, device: Device
) -> dict[str, Any]:
    """The reserved peak of each largest request, drawn and checked with the checker resident."""
    figures: dict[str, Any] = {}
    for pictures, side in args.peaks:
        job = dataclasses.replace(
            spec, num_images=pictures, width=side, height=side, num_inference_steps=args.peak_steps
        )
        graphs = service.graphs_built
        device.reset_peaks()
        started = time.perf_counter()
        service.draw(job, avatar)
        device.synchronise()
        figures[f"{pictures}x{side}"] = {
            **device.peaks_gib(),
            "seconds": round(time.perf_counter() - started, 3),
            "steps": args.peak_steps,
            "graphs_built": service.graphs_built - graphs,
        }
    return {"peaks_checker_resident": figures} if figures else {}


def _safety(
    checker: Any, generator: Any, spec: Any, avatar: Any, args: argparse.Namespace, device: Device
) -> dict[str, Any]:
    """The resident checker's seconds per picture on the decoded device pixels."""
    job = dataclasses.replace(spec, num_inference_steps=1, num_images=4)
    decoded = generator._draw(job, avatar, None)
    checker.check_pixels(decoded.pixels[:1])
    one = _timed(args.runs, lambda run: checker.check_pixels(decoded.pixels[:1]), device)
    four = _timed(args.runs, lambda run: checker.check_pixels(decoded.pixels), device)
    return {
        "size": spec.width,
        "dtype": str(checker._dtype).removeprefix("torch."),
        "seconds_per_picture": round(statistics.median(one), 4),
        "seconds_per_picture_batch_4": round(statistics.median(four) / 4, 4),
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


def run_in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Start `call` in a thread; its outcome (result or exception) lands in the list."""
    outcome: list[Any] = []

    def work() -> None:
        try:
            outcome.append(call())
        except BaseException as error:  # handed to the caller
            outcome.append(error)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, outcome
