"""bench/fleet_sim.py on cases with known answers."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bench import fleet_sim
from bench.fleet_sim import BEGIN, END, InstanceType, Policy, simulate

ONE_GPU = InstanceType("one", 1, on_demand=1.0, spot=0.4)
FOUR_GPUS = InstanceType("four", 4, on_demand=4.0, spot=1.6)


def test_constant_arrivals_obey_littles_law() -> None:
    # 100 an hour (one every 36 s), 30 s each, one GPU: nobody waits, W = 30 s,
    # and the time-average number in the system is L = lambda * W = 30 / 36.
    arrivals = fleet_sim.constant(100, 10)
    result = simulate(arrivals, ONE_GPU, Policy(), [30.0] * len(arrivals), fixed_fleet=1)
    assert result.pictures == 1000
    assert max(result.waits) == 0.0
    lam = 100 / fleet_sim.HOUR
    assert result.in_system_area / result.end == pytest.approx(lam * 30.0, rel=0.01)
    assert result.end == pytest.approx(999 * 36 + 30)


def test_overload_waits_grow_by_the_difference() -> None:
    # One every 20 s, 30 s each: request k waits k x 10 s.
    arrivals = [20.0 * k for k in range(50)]
    result = simulate(arrivals, ONE_GPU, Policy(), [30.0] * 50, fixed_fleet=1)
    assert result.waits == pytest.approx([10.0 * k for k in range(50)])
    assert result.percentile(50) == pytest.approx(245.0)


def test_every_gpu_of_an_instance_takes_a_job() -> None:
    # Load 100/30 = 3.3 GPUs on a 4-GPU instance: nobody waits; on one GPU they do.
    arrivals = [30.0 * k for k in range(40)]
    four = simulate(arrivals, FOUR_GPUS, Policy(), [100.0] * 40, fixed_fleet=1)
    assert max(four.waits) == 0.0
    one = simulate(arrivals, ONE_GPU, Policy(), [100.0] * 40, fixed_fleet=1)
    assert max(one.waits) > 1000


def test_a_book_wakes_the_fleet_from_zero_scales_out_and_back_to_zero() -> None:
    policy = Policy(max_size=5)
    arrivals = fleet_sim.book(300)
    result = simulate(arrivals, ONE_GPU, policy, [20.0] * 300)
    assert result.pictures == 300
    # Nothing runs before the alarm has seen the backlog and an instance warmed up.
    assert min(result.waits) >= policy.metric_delay_s + policy.warmup_s
    gpus = [s[2] for s in result.samples]
    assert max(gpus) == 5
    assert gpus[-1] == 0
    # 300 x 20 s on at most 5 GPUs takes at least 1200 s after the first start.
    assert max(result.waits) >= min(result.waits) + 300 * 20 / 5 - 20
    # Scale-in waits for scale_in_evals low evaluations after the queue emptied.
    last_start = max(result.waits)
    assert result.end >= last_start + 20 + policy.scale_in_evals * policy.eval_s - policy.eval_s
    assert result.gpu_hours * fleet_sim.HOUR >= 300 * 20


def test_counting_running_requests_keeps_a_busy_fleet_up() -> None:
    rng = random.Random(3)
    arrivals = fleet_sim.steady(150, 6, rng)
    gen = fleet_sim.generation_times(len(arrivals), 15, 30, rng)
    counted = simulate(arrivals, ONE_GPU, Policy(), gen)
    visible_only = simulate(arrivals, ONE_GPU, Policy(count_in_flight=False), gen)
    busy_hours = [s for s in visible_only.samples if 1 * fleet_sim.HOUR < s[0] < 5 * fleet_sim.HOUR]
    # With the visible backlog only, the fleet drops to zero under load, and waits grow.
    assert any(s[2] == 0 for s in busy_hours)
    counted_hours = [s for s in counted.samples if 1 * fleet_sim.HOUR < s[0] < 5 * fleet_sim.HOUR]
    assert all(s[2] >= 1 for s in counted_hours)
    assert counted.percentile(95) < visible_only.percentile(95)


def test_cost_counts_every_billed_second() -> None:
    arrivals = fleet_sim.constant(100, 1)
    result = simulate(arrivals, FOUR_GPUS, Policy(), [30.0] * 100, fixed_fleet=2)
    hours = 2 * result.end / fleet_sim.HOUR
    assert result.instance_seconds == pytest.approx(2 * result.end)
    assert result.cost_per_1000(4.0) == pytest.approx(hours * 4.0 / 100 * 1000)
    assert result.gpu_hours == pytest.approx(hours * 4)


def test_report_table_docs_section_and_plot(tmp_path: Path) -> None:
    rows, plotted = fleet_sim.run_all(Policy(), 15, 30)
    assert {r["type"] for r in rows} == {t.name for t in fleet_sim.INSTANCE_TYPES}
    assert len(rows) == 3 * len(fleet_sim.INSTANCE_TYPES)
    for r in rows:
        assert isinstance(r["spot"], float)
        assert isinstance(r["on_demand"], float)
        assert 0 < r["spot"] < r["on_demand"]
    text = fleet_sim.table(rows)
    assert text.count("\n") == len(rows) + 1
    page = tmp_path / "ops.md"
    page.write_text(f"# Ops\n\n{BEGIN}\nold\n{END}\n\nafter\n")
    fleet_sim.write_docs(text, page)
    assert page.read_text() == f"# Ops\n\n{BEGIN}\n{text}\n{END}\n\nafter\n"
    png = fleet_sim.plot(plotted, tmp_path / "fleet.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
