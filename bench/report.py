"""The benchmarks' section of ``docs/benchmarks.md``, rendered from the results.

Only the text between ``<!-- bench:begin -->`` and ``<!-- bench:end -->`` is
rewritten; everything else in the file (the "Pipeline on GPU" section, which
`bench/sdxl_gpu.py`'s figures fill) is kept as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.machine import summary as machine_summary
from bench.plots import BUSY_PNG, SCALE_PNG, cpu_ceiling
from bench.systems import BASELINE, ILLUSTRATOR

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"
RSS_TARGET_MB = 200
REPRODUCE = "make bench"
TITLE = "# Benchmarks\n"


def _ms(value: float) -> str:
    return f"{value:.0f} ms"


def _runs(queue: dict[str, Any], system: str) -> dict[int, dict[str, Any]]:
    return {r["latency_ms"]: r for r in queue["runs"] if r["system"] == system}


def _verdict(comparison: dict[str, Any]) -> str:
    if comparison["target"] is None:
        return "no target"
    if comparison["met"]:
        return "**met**"
    return f"**missed** by {comparison['short_by']:.3f}"


def _busy_table(queue: dict[str, Any]) -> list[str]:
    lines = [
        "| job length | illustrator | sequential baseline | ours / baseline | target | |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for c in queue["comparisons"]:
        target = "-" if c["target"] is None else f"≥ {c['target']}"
        lines.append(
            f"| {c['latency_ms']} ms | {c['ours']:.3f} | {c['baseline']:.3f} | "
            f"{c['ratio']:.2f}x | {target} | {_verdict(c)} |"
        )
    return lines


def _overhead_table(queue: dict[str, Any]) -> list[str]:
    lines = [
        "| job length | system | events: total - generate, p50 / p95 | lone job: end to end"
        " - generate, p50 / p95 | GPU idle per job in the batch |",
        "|---:|---|---:|---:|---:|",
    ]
    for run in sorted(queue["runs"], key=lambda r: (r["latency_ms"], r["system"] != ILLUSTRATOR)):
        over, lone = run["overhead_ms"], run["lone_overhead_ms"]
        lines.append(
            f"| {run['latency_ms']} ms | {run['system']} | {_ms(over['p50'])} / "
            f"{_ms(over['p95'])} | {_ms(lone['p50'])} / {_ms(lone['p95'])} | "
            f"{run['gap_per_job_ms']:.1f} ms |"
        )
    return lines


def _cores_busy(run: dict[str, Any]) -> float:
    return float(sum(run["cpu_s"].values()) / run["wall_s"])


def _cpu_per_job(run: dict[str, Any], name: str) -> float:
    return float(run["cpu_s"].get(name, 0.0) / run["jobs"] * 1000)


def _machine(run: dict[str, Any]) -> str:
    busy = run.get("machine_cores_busy")
    return "?" if busy is None else f"{busy:.2f}"


def _why_ours(run: dict[str, Any], cores: int) -> list[str]:
    """Where the consumer's idle GPU time went, from the run's own figures."""
    jobs, latency = run["jobs"], run["latency_ms"]
    busy_s = jobs * latency / 1000
    idle_s = run["wall_s"] - busy_s
    fill_s = min(idle_s, run["lone_overhead_ms"]["p50"] / 1000)
    inside_ms = max(0.0, run.get("generate_ms", {}).get("p50", latency) - latency)
    rest_ms = max(0.0, (idle_s - fill_s) / jobs * 1000 - inside_ms)
    consumer_ms = _cpu_per_job(run, ILLUSTRATOR)
    return [
        f"- At {latency} ms the GPU stood idle {idle_s:.2f} s of {run['wall_s']:.2f} s:",
        f"  - filling and draining the pipeline once, about {fill_s:.2f} s (a lone job's "
        "overhead: the first job cannot start before its request and avatar arrive, the last "
        f"event comes after the last upload and publish); this alone caps {jobs} jobs at "
        f"{busy_s / (busy_s + fill_s):.3f};",
        f"  - inside the generate call beyond the simulated time, about {inside_ms:.0f} ms per "
        "job (the blank picture is drawn after the sleep; the thread wakes late on a busy "
        "machine);",
        f"  - the GPU thread waiting for its next job, the remaining {rest_ms:.1f} ms per job. "
        f"The consumer spent {consumer_ms:.0f} ms of CPU per job ({consumer_ms / latency:.0%} "
        "of the job length: PNG encoding, decoding and its AWS calls, all in one process "
        f"under one interpreter lock), moto {_cpu_per_job(run, 'moto'):.0f} ms and the harness "
        f"{_cpu_per_job(run, 'harness'):.0f} ms; {_cores_busy(run):.2f} of {cores} cores were "
        f"busy with these processes, {_machine(run)} with everything on the machine."
        + _cpu_verdict(consumer_ms, latency),
    ]


def _cpu_verdict(consumer_ms: float, latency_ms: int) -> str:
    """A sentence when the consumer's own CPU work per job is about the job length."""
    if consumer_ms < 0.9 * latency_ms:
        return ""
    return (
        f" With {consumer_ms:.0f} ms of its own CPU work per {latency_ms} ms job, one consumer "
        "process on this CPU cannot keep up however well it overlaps I/O with generation: the "
        "target needs that work well under the job length (a faster PNG encoding setting and "
        "fewer calls per job would help) and a machine whose other processes leave it a core."
    )


def _why_baseline(queue: dict[str, Any]) -> str:
    pieces = queue.get("micro_ms") or {}
    total = sum(pieces.values())
    listed = ", ".join(f"{name.replace('_', ' ')} {value:.1f} ms" for name, value in pieces.items())
    gaps = "; ".join(
        f"{latency} ms: {run['gap_per_job_ms']:.0f} ms ({_machine(run)} cores busy)"
        for latency, run in sorted(_runs(queue, BASELINE).items())
    )
    return (
        "The baseline's GPU waits through every step of every job. Each step measured alone, "
        f"one call at a time: {listed}; together about {total:.0f} ms. In the batches its GPU "
        f"idled per job {gaps}: the same calls, slowed by everything else running at the same "
        "time (moto also serving the harness's reads of the events, other load on the machine)."
    )


def _setting(queue: dict[str, Any], cores: int) -> str:
    closes = queue.get("moto_closes_connections")
    connections = (
        " Moto's server also answers every call with `Connection: close`, so each call pays "
        "for a new TCP connection and a new server thread, which AWS's keep-alive endpoints "
        "do not charge."
        if closes
        else ""
    )
    return (
        f"What this machine adds: {cores} cores shared by moto's server (SQS, SNS and S3 in one "
        "Python process), the consumer and the harness, so every job's CPU work (the "
        "consumer's and moto's) competes with the next job's preparation." + connections
    )


def _memory(queue: dict[str, Any]) -> list[str]:
    lines = []
    for latency, run in sorted(_runs(queue, ILLUSTRATOR).items()):
        peak = run["peak_rss_mb"]
        verdict = (
            "**met**" if peak <= RSS_TARGET_MB else f"**missed** by {peak - RSS_TARGET_MB:.0f} MB"
        )
        torch = (
            "torch is loaded in the process (libtorch is mapped), which accounts for most of it"
            if run["torch_loaded"]
            else "torch is not loaded"
        )
        lines.append(
            f"- {latency} ms run: peak RSS {peak:.0f} MB (target ≤ {RSS_TARGET_MB} MB): "
            f"{verdict}; {torch}; exit status after SIGTERM {run['exit_status']}."
        )
    return lines


def queue_section(queue: dict[str, Any], cores: int) -> list[str]:
    """The queue path: busy fractions, per-job overhead, memory, and why."""
    config = queue["config"]
    ours = _runs(queue, ILLUSTRATOR)
    lines = [
        "## Queue path: how busy the GPU is kept",
        "",
        f"`builtin:blank` sleeps for the simulated GPU time of each job; {config['jobs']} memory"
        f" jobs per run, {config['side']}x{config['side']} PNG outputs, a "
        f"{config['avatar_side']}x{config['avatar_side']} avatar (about 400 KB). The consumer "
        "(`python -m consumer run`) and then the baseline (a sequential synchronous boto3 loop: "
        "receive, download, generate, upload, publish, delete; `bench/baseline.py`) each drain "
        "a batch from a queue of the same configuration on the same moto server, with the same "
        "topic, bucket and observer queue. (Not literally one queue: a stopped process's "
        "interrupted long poll lives on in the server and would hide the next system's first "
        "message for its visibility timeout.) GPU-busy fraction = jobs x simulated time / wall "
        "time from the first request sent to the last completion event received.",
        "",
        *_busy_table(queue),
        "",
        f"![GPU-busy fraction against job length](../bench/results/{BUSY_PNG})",
        "",
        "Time each job adds beyond generation: from the events' `timings_ms`; end to end for "
        f"{config['lone_jobs']} jobs sent one at a time after the batch; and the GPU's idle "
        "time per job in the batch ((wall - jobs x simulated time) / jobs).",
        "",
        *_overhead_table(queue),
        "",
        "The consumer's `total` counts from the moment a request is received, so for a request "
        "prefetched while another job generates it includes that wait: about one job length. "
        "The lone-job figures are the time a job adds on an idle consumer.",
        "",
        "Why the fractions are what they are:",
        "",
        *[line for _, run in sorted(ours.items()) for line in _why_ours(run, cores)],
        f"- {_why_baseline(queue)}",
        "",
        _setting(queue, cores),
        "",
        "The consumer's resident memory with `builtin:blank`:",
        "",
        *_memory(queue),
    ]
    return lines


def _scale_limit(scale: dict[str, Any]) -> str:
    """What holds throughput back, judged from the largest run's own figures."""
    top = max(scale["runs"], key=lambda r: r["consumers"])
    cores = scale["cores"]
    cpu_ms = top["moto_ms_per_job"] + top["consumers_ms_per_job"] + top["harness_ms_per_job"]
    ceiling = cpu_ceiling(top, cores)
    costs = (
        f"each job costs {cpu_ms:.0f} ms of CPU here (moto's server {top['moto_ms_per_job']:.0f},"
        f" the consumers {top['consumers_ms_per_job']:.0f}, the harness "
        f"{top['harness_ms_per_job']:.0f}), so {cores} cores carry at most about "
        f"{ceiling:.0f} jobs/s"
    )
    if top["throughput_jobs_s"] >= 0.9 * top["gpu_bound_jobs_s"]:
        head = f"GPU-bound: {top['consumers']} consumers keep their simulated GPUs busy"
    elif top.get("machine_cores_busy", top["cores_busy"]) >= 0.85 * cores:
        head = (
            f"CPU-bound: with {top['consumers']} consumers {_machine(top)} of {cores} cores "
            f"were busy ({top['cores_busy']:.2f} with the benchmark's own processes)"
        )
    else:
        head = (
            f"Neither bound is reached ({_machine(top)} of {cores} cores busy): the time goes "
            "to waiting on moto's round trips, which one server process answers one at a time"
        )
    return (
        f"{head}; {costs}. Every consumer, moto's server (which stands in for SQS, SNS and S3 and"
        " serves them from one process) and PNG encoding share this machine, so the ceiling is "
        "the machine's: in production each consumer has its own GPU host and AWS's services "
        "scale apart from it."
    )


def scale_section(scale: dict[str, Any]) -> list[str]:
    """Throughput against consumers, and what limits it here."""
    config = scale["config"]
    one = next((r for r in scale["runs"] if r["consumers"] == 1), scale["runs"][0])
    lines = [
        "## Scale-out: consumers on one queue",
        "",
        f"{config['jobs']} jobs of {config['latency_ms']} ms simulated GPU time per run; each "
        "consumer stands for one GPU machine. A fresh queue per run.",
        "",
        "| consumers | jobs/s | GPU-bound | speed-up | GPU busy per consumer | cores busy"
        f" (of {scale['cores']}): ours / machine | CPU per job: moto / consumers / harness "
        "| jobs per consumer |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in sorted(scale["runs"], key=lambda r: r["consumers"]):
        shares = ", ".join(str(n) for n in run["jobs_per_consumer"].values())
        lines.append(
            f"| {run['consumers']} | {run['throughput_jobs_s']:.1f} | "
            f"{run['gpu_bound_jobs_s']:.0f} | "
            f"{run['throughput_jobs_s'] / one['throughput_jobs_s']:.2f}x | "
            f"{run['gpu_busy_per_consumer']:.2f} | {run['cores_busy']:.2f} / {_machine(run)} | "
            f"{run['moto_ms_per_job']:.0f} / {run['consumers_ms_per_job']:.0f} / "
            f"{run['harness_ms_per_job']:.0f} ms | {shares} |"
        )
    lines += [
        "",
        f"![Throughput against consumers](../bench/results/{SCALE_PNG})",
        "",
        _scale_limit(scale),
    ]
    return lines


def tiny_section(tiny: dict[str, Any]) -> list[str]:
    """`builtin:tiny` per step and per job on the CPU."""
    side = tiny["side"]
    return [
        "## Pipeline on the CPU: `builtin:tiny`",
        "",
        f"The real SDXL code path with small random-weight components, {side}x{side}, "
        f"{tiny['threads']} torch threads, best of {tiny['repeats']} runs each of a 2-step "
        "and a 4-step generation (alternating; other load on the machine only adds time). Per "
        "step = (4-step - 2-step) / 2; fixed per job = 2-step - 2 x per step (prompt and image "
        "encoding, VAE decode, conversion). Medians: "
        + ", ".join(f"{steps} steps {ms:.0f} ms" for steps, ms in tiny["median_ms"].items())
        + ".",
        "",
        "| per step | fixed per job | 2-step job | 4-step job | load (build + warm-up) "
        "| import torch + diffusers | peak RSS |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {tiny['per_step_ms']:.0f} ms | {tiny['per_job_fixed_ms']:.0f} ms | "
        f"{tiny['job_2_steps_ms']:.0f} ms | {tiny['job_4_steps_ms']:.0f} ms | "
        f"{tiny['load_s']:.1f} s | {tiny['import_s']:.1f} s | {tiny['peak_rss_mb']:.0f} MB |",
        *_tiny_batch_and_start(tiny),
    ]


def _tiny_batch_and_start(tiny: dict[str, Any]) -> list[str]:
    """The batch-against-single-calls ratio and start to ready, when measured."""
    if "singles_over_batch" not in tiny:
        return []
    n = tiny["batch"]
    return [
        "",
        f"{n} pictures of {tiny['batch_steps']} steps in one call: {tiny['batch_call_ms']:.0f} ms; "
        f"the same {n} in {n} one-picture calls: {tiny['single_calls_ms']:.0f} ms "
        f"({tiny['singles_over_batch']:.2f}x the batch). Start to ready of the tiny model saved "
        "to disk, in a fresh process (interpreter start, imports, reading the weights, warm-up): "
        f"{tiny['start_to_ready_from_disk_s']:.1f} s.",
    ]


def _failures(results: dict[str, Any]) -> list[str]:
    errors = results.get("run", {}).get("errors", {})
    if not errors:
        return []
    lines = ["", "**Phases that failed in the last run:**", ""]
    lines += [f"- {phase}: `{message.splitlines()[0]}`" for phase, message in errors.items()]
    return lines


def render(results: dict[str, Any]) -> str:
    """The generated block, markers included."""
    run = results.get("run", {})
    machine = run.get("machine", {})
    cores = int(machine.get("cores") or 1)
    lines = [
        BEGIN,
        "<!-- Generated by `python -m bench` from bench/results/*.json; edits here are lost. -->",
        "",
    ]
    if "queue_path" in results:
        lines += [*queue_section(results["queue_path"], cores), ""]
    if "scale_out" in results:
        lines += [*scale_section(results["scale_out"]), ""]
    if "tiny_cpu" in results:
        lines += [*tiny_section(results["tiny_cpu"]), ""]
    lines += [
        "## Reproducing",
        "",
        f"`{REPRODUCE}` (that is, `.venv/bin/python -m bench`; `--help` lists options for "
        "smaller runs) writes `bench/results/*.json`, redraws the plots and rewrites this "
        "section. The phases run one after the other, never in parallel.",
        "",
    ]
    if machine:
        lines.append(
            f"Last run: {run.get('finished_at', '?')}, {run.get('duration_s', 0):.0f} s in all,"
            f" on {machine_summary(machine)}; load average at start "
            f"{', '.join(str(x) for x in machine['load_average_at_start'])}."
        )
    lines += [*_failures(results), END]
    return "\n".join(lines) + "\n"


def refresh(path: Path, block: str) -> None:
    """Put `block` between the markers of `path`, keeping the rest of the file."""
    text = path.read_text(encoding="utf-8") if path.exists() else TITLE
    start, end = text.find(BEGIN), text.find(END)
    if start != -1 and end > start:
        text = text[:start] + block.rstrip("\n") + text[end + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
