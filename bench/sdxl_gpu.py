"""SDXL + IP-Adapter on a GPU: the questions only a GPU answers, in one run of at most 10 minutes.

Each variant (a precision and a compile mode) runs in a fresh process
through the service's own loading path, the safety checker resident
(``bench/sdxl_child.py``), and answers: start to ready; seconds per picture
and pictures per second; the reserved memory peak of the largest requests
(4 x 1024x1024, 2048x2048); how soon a stop lands; the graphs compiled or
recorded; how often each scheduler's steps make the host wait; and how far
picture i of a batch is from its one-picture job (PSNR).

    python -m bench.sdxl_gpu --prepare        # once: build and save the random weights
    python -m bench.sdxl_gpu                  # the run: 3 variants within --budget (540 s)
    python -m bench.sdxl_gpu --tiny           # in miniature on a CPU (what CI runs)

The parent never touches the GPU (the weights are built in a child too), so
a variant measures with the whole GPU; each child allocates with
``expandable_segments``, as the service's image does, into a fresh inductor
cache. A variant that fails or runs out of time keeps the figures it
measured, and the JSON is written whatever happens. Figures are printed
and written to ``bench/results/sdxl_gpu-*.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.sdxl_arch import IMAGE_ENCODERS, saved, weights_folder
from bench.sdxl_report import print_table, verdicts

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"
GPU_VARIANTS = ("bf16", "bf16+compile", "bf16+reduce-overhead")
CPU_VARIANTS = ("fp32",)
# The largest requests: one picture and four at the native size, one at the largest side.
GPU_PEAKS = "1x1024,4x1024,1x2048"
SERVICE_STEPS = 50
GPU_BUDGET_S = 540.0
ALLOCATOR = "expandable_segments:True"
MIN_VARIANT_S = 60.0


def run_variant(
    variant: str, dirs: tuple[Path, Path, Path], args: argparse.Namespace, timeout: float
) -> dict[str, Any]:
    """One variant in a fresh interpreter; its figures, even those of a run cut short."""
    argv = [sys.executable, "-m", "bench.sdxl_gpu", "--child", "--variant", variant]
    argv += ["--model-dir", str(dirs[0]), "--ip-dir", str(dirs[1]), "--checker-dir", str(dirs[2])]
    argv += [*_passed_on(args), "--started-at", repr(time.time())]
    # A fresh inductor cache per variant: a cache left by an earlier variant
    # or run would make its start to ready look shorter than a new machine's.
    cache = tempfile.mkdtemp(prefix=f"inductor-{variant.replace('+', '-')}-")
    out = Path(cache) / "figures.json"
    environment = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "TORCHINDUCTOR_CACHE_DIR": cache,
        "PYTORCH_CUDA_ALLOC_CONF": ALLOCATOR,
        "SDXL_BENCH_OUT": str(out),
    }
    error, tail = None, ""
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            cwd=REPO_ROOT,
            env=environment,
        )
        if done.returncode != 0:
            error, tail = f"exit status {done.returncode}", (done.stdout + done.stderr)[-3000:]
    except subprocess.TimeoutExpired as expired:
        error = f"timed out after {timeout:.0f} s; the figures measured until then are kept"
        tail = _text(expired.stdout)[-1500:] + _text(expired.stderr)[-1500:]
    try:
        figures: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    figures.setdefault("variant", variant)
    if error:
        figures.update(error=error, log_tail=tail)
    return figures


def _text(output: str | bytes | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def _passed_on(args: argparse.Namespace) -> list[str]:
    """The options a child measures with."""
    return [
        *("--size", str(args.size), "--steps", str(args.steps), "--runs", str(args.runs)),
        *("--device", args.device, "--batches", ",".join(map(str, args.batches))),
        *("--schedulers", ",".join(args.schedulers)),
        *("--peaks", ",".join(f"{p}x{s}" for p, s in args.peaks)),
        *("--peak-steps", str(args.peak_steps), "--psnr-steps", str(args.psnr_steps)),
        *("--psnr-pictures", str(args.psnr_pictures)),
        *(["--few-step"] if args.few_step else []),
        *(["--no-sync-counts"] if not args.schedulers_sync else []),
    ]


def run_all(dirs: tuple[Path, Path, Path], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every variant in turn, within the budget; one skipped for want of time says so."""
    results = []
    deadline = time.monotonic() + args.budget if args.budget else None
    for variant in args.variants:
        timeout = args.timeout
        if deadline is not None:
            left = deadline - time.monotonic()
            if left < MIN_VARIANT_S:
                results.append({"variant": variant, "error": "skipped: the run's budget is spent"})
                continue
            timeout = min(timeout, left)
        results.append(run_variant(variant, dirs, args, timeout))
    return results


def _machine() -> dict[str, Any]:
    # Versions from the installed metadata: the parent never starts CUDA, so
    # it holds no GPU memory while its children measure.
    torch = sys.modules.get("torch")
    return {
        "torch": metadata.version("torch"),
        "diffusers": metadata.version("diffusers"),
        "cpu_count": os.cpu_count(),
        "parent_started_cuda": bool(torch is not None and torch.cuda.is_initialized()),
    }


def document(results: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """The JSON document of the run."""
    for result in results:
        if "seconds_per_picture" in result and not args.tiny:
            result["meets_targets"] = verdicts(result)
    return {
        "benchmark": "sdxl_gpu",
        "miniature": args.tiny,
        "image_encoder": None if args.tiny else args.image_encoder,
        "workload": {"size": args.size, "steps": args.steps, "batch": 1, "runs": args.runs},
        "cases": {
            "batches": list(args.batches),
            "schedulers": list(args.schedulers),
            "few_step": args.few_step,
            "peaks": [f"{pictures}x{side}" for pictures, side in args.peaks],
            "peak_steps": args.peak_steps,
            "psnr": {"pictures": args.psnr_pictures, "steps": args.psnr_steps},
        },
        "budget_s": args.budget,
        "machine": _machine(),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "results": results,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line, with the defaults of the device it measures."""
    parser = argparse.ArgumentParser(prog="python -m bench.sdxl_gpu", description=__doc__)
    add = parser.add_argument
    add("--tiny", action="store_true", help="in miniature: builtin:tiny, 128 px, 2 steps, CPU")
    add("--prepare", action="store_true", help="only build and save the weights, then stop")
    add(
        "--variants",
        help="comma-separated DTYPE[+compile|+reduce-overhead|+max-autotune]"
        "[+regional][+vae], e.g. bf16,fp16+compile (default: 3 for a GPU, fp32 on a CPU)",
    )
    add(
        "--image-encoder",
        choices=sorted(IMAGE_ENCODERS),
        default="vit-h",
        help="vit-h: ip-adapter_sdxl_vit-h (default); vit-bigg: ip-adapter_sdxl",
    )
    add("--size", type=int)
    add("--steps", type=int)
    add("--runs", type=int, help="timed runs per figure (default: 2 on a GPU, 3 on a CPU)")
    add("--device", help="cuda or cpu (default: cuda for full size, cpu for --tiny)")
    add("--batches", help="pictures per call timed, e.g. 1,4 (default: 1,4 on a GPU, 1 on a CPU)")
    add("--schedulers", help="also timed, e.g. DDIMScheduler,DPMSolverMultistepScheduler+karras")
    add("--few-step", action="store_true", help="also time the few-step recipe")
    add(
        "--peaks",
        help="PICTURESxSIDE requests whose memory peak is measured "
        f"(default on a GPU: {GPU_PEAKS})",
    )
    add("--peak-steps", type=int, default=2, help="steps of each peak's request")
    add("--psnr-steps", type=int, help="steps of the batch-against-single pictures")
    add("--psnr-pictures", type=int, default=4)
    add(
        "--no-sync-counts",
        dest="schedulers_sync",
        action="store_false",
        help="skip counting each scheduler's waits (GPU only)",
    )
    add("--workdir", type=Path, help="where the random weights are saved (kept for reruns)")
    add("--results-dir", type=Path, default=RESULTS_DIR)
    add("--timeout", type=float, default=600.0, help="seconds per variant at most")
    add("--budget", type=float, help=f"seconds for all variants (GPU default {GPU_BUDGET_S:g})")
    add("--child", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--variant", "--model-dir", "--ip-dir", "--checker-dir"):
        add(hidden, help=argparse.SUPPRESS)
    add("--started-at", type=float, help=argparse.SUPPRESS)
    return _defaults(parser.parse_args(argv))


def _defaults(args: argparse.Namespace) -> argparse.Namespace:
    args.size = args.size or (128 if args.tiny else 1024)
    args.steps = args.steps or (2 if args.tiny else SERVICE_STEPS)
    args.psnr_steps = args.psnr_steps or (4 if args.tiny else 20)
    args.device = args.device or ("cpu" if args.tiny else "cuda")
    gpu = args.device != "cpu"
    default = CPU_VARIANTS if not gpu else GPU_VARIANTS
    args.variants = tuple(args.variants.split(",")) if args.variants else default
    args.batches = tuple(int(b) for b in (args.batches or ("1,4" if gpu else "1")).split(","))
    args.runs = args.runs or (2 if gpu else 3)
    args.schedulers = tuple(name for name in (args.schedulers or "").split(",") if name)
    peaks = args.peaks if args.peaks is not None else (GPU_PEAKS if gpu else "")
    args.peaks = tuple(
        (int(pictures), int(side))
        for pictures, side in (peak.split("x") for peak in peaks.split(",") if peak)
    )
    args.budget = args.budget if args.budget is not None else (GPU_BUDGET_S if gpu else None)
    return args


def _weights(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    """The saved weights, built in a process of their own when missing."""
    workdir = args.workdir or Path(os.environ.get("TMPDIR", "/tmp")) / "sdxl_gpu_bench"
    root = weights_folder(workdir, tiny=args.tiny, image_encoder=args.image_encoder)
    ready = saved(root)
    if ready:
        return ready
    argv = [sys.executable, "-m", "bench.sdxl_arch", "--workdir", str(workdir)]
    argv += ["--tiny"] if args.tiny else ["--image-encoder", args.image_encoder]
    argv += ["--device", args.device]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTORCH_CUDA_ALLOC_CONF": ALLOCATOR}
    subprocess.run(argv, check=True, cwd=REPO_ROOT, env=env)
    ready = saved(root)
    if ready is None:
        raise SystemExit(f"the weights were not saved under {root}")
    return ready


def main(argv: Sequence[str] | None = None) -> int:
    """Run every variant and write the results; 1 if any variant failed."""
    args = parse_args(argv)
    if args.child:
        from bench.sdxl_child import measure

        out = os.environ.get("SDXL_BENCH_OUT")
        print(json.dumps(measure(args, Path(out) if out else None)), flush=True)
        return 0
    dirs = _weights(args)
    if args.prepare:
        print(f"weights ready: {', '.join(map(str, dirs))}")
        return 0
    results = run_all(dirs, args)
    report = document(results, args)
    print_table(report)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.results_dir / f"sdxl_gpu{'-tiny' if args.tiny else ''}-{stamp}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results written to {path}")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
