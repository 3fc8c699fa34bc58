"""The GPU benchmark's figures in words: a table per question, and the targets met or not."""

from __future__ import annotations

from typing import Any

TARGETS = {"seconds_per_picture": 1.5, "reserved_peak_gib": 11.0, "start_to_ready_s": 20.0}


def largest_peak(result: dict[str, Any]) -> float | None:
    """The highest reserved peak among the largest requests measured (GiB)."""
    peaks = [
        figures.get("reserved_peak_gib")
        for figures in result.get("peaks_checker_resident", {}).values()
    ]
    known = [peak for peak in peaks if peak is not None]
    return max(known) if known else None


def verdicts(result: dict[str, Any]) -> dict[str, bool | None]:
    """Each target met or not; memory by the largest request's reserved peak, checker resident."""
    peak = largest_peak(result)
    return {
        "seconds_per_picture": result["seconds_per_picture"] <= TARGETS["seconds_per_picture"],
        "reserved_peak_gib": None if peak is None else peak <= TARGETS["reserved_peak_gib"],
        "start_to_ready_s": result["start_to_ready_s"] <= TARGETS["start_to_ready_s"],
    }


def _cell(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    return format(value, spec) if spec and isinstance(value, int | float) else str(value)


def print_table(report: dict[str, Any]) -> None:
    """Print the run's figures, each under a heading that says what it measures."""
    results = report["results"]
    print("variant | s/picture (checked) | pictures/s at batch 4 | ms/step | ready s | graphs")
    for r in results:
        if "seconds_per_picture" not in r:
            print(f"{r['variant']}: no figures: {r.get('error', 'unknown')}")
            continue
        print(
            f"{r['variant']} | {r['seconds_per_picture']:.3f} | "
            f"{_cell(r.get('pictures_per_second_batch_4'), '.2f')} | {r['per_step_ms']:.1f} | "
            f"{r['start_to_ready_s']:.1f} | {r['graphs_after_load']} at load, "
            f"{r.get('graphs_built_in_timed_jobs', '-')} in jobs"
        )
    print("reserved memory peak (GiB), safety checker resident:")
    for r in results:
        peaks = r.get("peaks_checker_resident", {})
        cells = ", ".join(
            f"{name}: {_cell(figures.get('reserved_peak_gib'))}" for name, figures in peaks.items()
        )
        print(f"  {r['variant']}: {cells or '-'}")
    print("stop: seconds from the stop to the end of the generation, and in steps:")
    for r in results:
        stop = r.get("stop") or {}
        print(
            f"  {r['variant']}: {_cell(stop.get('latency_s'))} s, "
            f"{_cell(stop.get('latency_in_steps'))} steps"
        )
    print("host waits per denoising step, by scheduler (CUDA sync debug warnings):")
    for r in results:
        syncs = r.get("scheduler_syncs") or {}
        cells = ", ".join(f"{name}: {s['waits_per_step']}" for name, s in syncs.items())
        print(f"  {r['variant']}: {cells or 'not measured (CPU)'}")
    print("picture i of a batch against the one-picture job of its seed (PSNR, dB):")
    for r in results:
        psnr = r.get("batch_vs_single") or {}
        print(
            f"  {r['variant']}: min {_cell(psnr.get('psnr_db_min'))}, "
            f"largest pixel difference {_cell(psnr.get('largest_pixel_difference'))}"
        )
    for r in results:
        if "error" in r:
            print(f"{r['variant']} failed: {r['error']}\n{r.get('log_tail', '')}")
