"""The benchmark harness in miniature: a few jobs through every phase.

These prove that the harness drives the consumer and the baseline through the
wire contract, writes its results and plots, and refreshes only its own part
of the docs. They assert nothing about timings: those are the benchmark's
output, not a property of the code.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.__main__ import main
from bench.measure import percentile, summary, timing_overheads_ms

GPU_SECTION = "## Pipeline on GPU\n\nWritten by the pipeline's own benchmark.\n"


def _load(directory: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / f"{name}.json").read_text())
    return data


def test_percentiles_interpolate_and_tolerate_empty() -> None:
    assert percentile([1, 2, 3, 4, 5], 50) == 3
    assert percentile([0, 10], 95) == pytest.approx(9.5)
    assert math.isnan(percentile([], 50))
    assert summary([5.0]) == {"p50": 5.0, "p95": 5.0, "max": 5.0}


def test_overhead_is_total_less_generate_and_skips_incomplete_events() -> None:
    events = [
        {"timings_ms": {"generate": 50, "total": 80}},
        {"timings_ms": {"total": 10}},
        {"status": "failed"},
    ]
    assert timing_overheads_ms(events) == [30.0]


def test_refresh_rewrites_only_between_the_markers(tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text(f"# Benchmarks\n\n{report.BEGIN}\nold\n{report.END}\n\n{GPU_SECTION}")
    report.refresh(docs, f"{report.BEGIN}\nnew\n{report.END}\n")
    text = docs.read_text()
    assert "new" in text
    assert "old" not in text
    assert text.endswith(GPU_SECTION)
    assert text.count(report.BEGIN) == 1


def test_refresh_appends_the_block_when_the_file_has_none(tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text(f"# Benchmarks\n\n{GPU_SECTION}")
    report.refresh(docs, f"{report.BEGIN}\nnew\n{report.END}\n")
    text = docs.read_text()
    assert GPU_SECTION in text
    assert text.rstrip().endswith(report.END)


def test_miniature_queue_and_scale_out_run(tmp_path: Path) -> None:
    results, docs = tmp_path / "results", tmp_path / "benchmarks.md"
    docs.write_text(f"# Benchmarks\n\n{GPU_SECTION}")
    status = main(
        [
            "--phases=queue,scale",
            "--jobs=4",
            "--lengths=10,20",
            "--lone-jobs=2",
            "--side=128",
            "--avatar=64",
            "--consumers=1,2",
            "--scale-jobs=4",
            "--scale-length=10",
            f"--results={results}",
            f"--docs={docs}",
        ]
    )

    assert status == 0, _load(results, "run")["errors"]
    queue = _load(results, "queue_path")
    assert {(r["system"], r["latency_ms"]) for r in queue["runs"]} == {
        ("illustrator", 10),
        ("baseline", 10),
        ("illustrator", 20),
        ("baseline", 20),
    }
    for run in queue["runs"]:
        assert (run["succeeded"], run["failed"]) == (4, 0)
        assert run["output_check"]["size"] == [128, 128]
        assert run["output_check"]["content_type"] == "image/png"
        assert run["busy_fraction"] > 0
    assert len(queue["comparisons"]) == 2
    scale = _load(results, "scale_out")
    assert [r["consumers"] for r in scale["runs"]] == [1, 2]
    assert all(r["succeeded"] == 4 for r in scale["runs"])
    assert (results / "gpu_busy.png").read_bytes().startswith(b"\x89PNG")
    assert (results / "scale_out.png").read_bytes().startswith(b"\x89PNG")
    text = docs.read_text()
    assert GPU_SECTION in text
    assert "## Queue path" in text
    assert "## Scale-out" in text


def test_miniature_tiny_pipeline_run(tmp_path: Path) -> None:
    results, docs = tmp_path / "results", tmp_path / "benchmarks.md"
    status = main(["--phases=tiny", "--tiny-repeats=1", f"--results={results}", f"--docs={docs}"])

    assert status == 0, _load(results, "run")["errors"]
    tiny = _load(results, "tiny_cpu")
    assert tiny["side"] == 128
    assert tiny["job_2_steps_ms"] > 0
    assert tiny["job_4_steps_ms"] > 0
    assert "builtin:tiny" in docs.read_text()
