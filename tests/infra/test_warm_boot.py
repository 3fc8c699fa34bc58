"""start-workers.sh on the warm-pool path, with the stub commands of
test_worker_scripts.py: an instance launched into the warm pool is prepared
(image pulled, weights fetched onto the volume) and starts no worker; when it
later boots out of the pool, or launches straight into service, its workers
start and the launch hook's action is completed once one is healthy.
"""

from __future__ import annotations

import subprocess
import time

from tests.infra.test_boot import UNHEALTHY
from tests.infra.test_worker_scripts import IMAGE, INSTANCE_ID, START, Host, host

__all__ = ["host"]

GROUP = "illustrator-workers-warm"


def complete(hook: str = "illustrator-ready") -> list[str]:
    """The aws argv that completes this instance's launch action."""
    return [
        *("autoscaling", "complete-lifecycle-action", "--region", "us-east-1"),
        *("--auto-scaling-group-name", GROUP, "--lifecycle-hook-name", hook),
        *("--instance-id", INSTANCE_ID, "--lifecycle-action-result", "CONTINUE"),
    ]


def _in_group(host: Host, state: str) -> Host:
    (host.root / "group").write_text(GROUP)
    (host.root / "target-state").write_text(state)
    return host


def _runs(host: Host) -> list[list[str]]:
    return [c for c in host.calls("docker") if c[0] == "run"]


def _autoscaling(host: Host) -> list[list[str]]:
    """The calls to Auto Scaling (the ECR login is an aws call too)."""
    return [c for c in host.calls("aws") if c[0] == "autoscaling"]


def _probes(host: Host) -> list[str]:
    return [c[-1] for c in host.calls("curl") if c[-1].endswith("/health")]


def test_an_instance_launched_into_the_warm_pool_is_prepared_and_runs_no_worker(
    host: Host,
) -> None:
    _in_group(host, "Warmed:Stopped")
    result = host.run(START)
    assert result.returncode == 0, result.stderr

    # The image is pulled and the weights fetched by a one-off container on
    # the shared cache volume; no worker container, no health probe.
    assert [c[0] for c in host.calls("docker") if c[0] in ("pull", "run")] == ["pull", "run"]
    [prefetch] = _runs(host)
    assert prefetch[-2:] == [IMAGE, "prefetch"]
    assert "--rm" in prefetch
    assert "-d" not in prefetch
    assert f"{host.root / 'cache'}:/var/cache/illustrator" in prefetch
    assert f"awslogs-stream={INSTANCE_ID}-prefetch" in prefetch
    assert _probes(host) == []
    # Nothing for the watchdog to watch; the group may now stop the instance.
    assert (host.conf / "workers").read_text() == ""
    assert _autoscaling(host) == [complete()]
    assert "ready for the warm pool" in result.stderr


def test_leaving_the_warm_pool_the_workers_start_then_the_instance_enters_service(
    host: Host,
) -> None:
    _in_group(host, "Warmed:Stopped")
    assert host.run(START).returncode == 0
    host.clear_calls()
    # Days later the group starts it: a new boot, target state InService.
    (host.conf / "boot-started").write_text(str(int(time.time()) - 5 * 86400))
    (host.root / "boot_id").write_text("boot-2\n")
    (host.root / "target-state").write_text("InService")

    result = host.run(START)
    assert result.returncode == 0, result.stderr
    [run] = _runs(host)
    assert "-d" in run  # a worker, not the prefetch
    assert run[-1] == IMAGE
    assert (host.conf / "workers").read_text() == "illustrator-gpu0 8080\n"
    # The launch action is completed only after a worker answered healthy.
    order = _ordered(host)
    assert order.index("health") < order.index("complete")
    assert _autoscaling(host) == [complete()]
    # The boot deadline counts from this boot, not from the first.
    assert int((host.conf / "boot-started").read_text()) >= int(time.time()) - 60
    assert (host.conf / "boot-id").read_text() == "boot-2\n"


def _ordered(host: Host) -> list[str]:
    """Health probes and launch completions, in the order they happened."""
    order = []
    for call in host.calls():
        if call and call[-1].endswith("/health"):
            order.append("health")
        elif "complete-lifecycle-action" in call:
            order.append("complete")
    return order


def test_a_cold_launch_into_service_completes_the_launch_hook_when_healthy(host: Host) -> None:
    _in_group(host, "InService")
    (host.root / "state-8080").write_text("starting")

    result = host.run(START, BOOT_HEALTHY_S="1")
    # Never healthy: no completion (the hook's ABANDON replaces it), Unhealthy.
    assert result.returncode == 1
    assert [c for c in _autoscaling(host) if "complete-lifecycle-action" in c] == []
    assert host.calls("aws")[-1] == UNHEALTHY

    (host.root / "state-8080").write_text("ready")
    (host.root / "boot_id").write_text("boot-2\n")
    host.clear_calls()
    assert host.run(START).returncode == 0
    assert _autoscaling(host) == [complete()]


def test_a_prefetch_that_fails_for_a_while_is_retried(host: Host) -> None:
    _in_group(host, "Warmed:Stopped")
    host.fail("docker", "run", 2)
    result = host.run(START)
    assert result.returncode == 0, result.stderr
    assert len(_runs(host)) == 3
    assert "fetching the weights failed (attempt 2)" in result.stderr
    assert _autoscaling(host) == [complete()]


def test_a_prefetch_that_keeps_failing_has_the_warm_instance_replaced(host: Host) -> None:
    _in_group(host, "Warmed:Stopped")
    host.fail("docker", "run", 100_000)
    result = host.run(START, BOOT_HEALTHY_S="1")
    assert result.returncode == 1
    assert host.calls("aws")[-1] == UNHEALTHY
    assert [c for c in _autoscaling(host) if "complete-lifecycle-action" in c] == []
    assert not (host.conf / "workers").exists()


def test_a_launch_action_that_cannot_be_completed_does_not_stop_the_workers(
    host: Host,
) -> None:
    # A rerun by hand: no action is waiting, so Auto Scaling refuses.
    _in_group(host, "InService")
    host.fail("aws", "autoscaling", 100_000)
    result = host.run(START)
    assert result.returncode == 0, result.stderr
    assert _autoscaling(host) == [complete()] * 3
    assert (host.conf / "workers").read_text() == "illustrator-gpu0 8080\n"
    assert "its timeout applies" in result.stderr


def test_outside_a_group_the_instance_serves_and_completes_nothing(host: Host) -> None:
    # No target state and no group tag in the metadata (404).
    result = host.run(START)
    assert result.returncode == 0, result.stderr
    assert "target lifecycle state: InService" in result.stderr
    assert _autoscaling(host) == []


def test_a_rerun_in_the_same_boot_keeps_the_boot_deadline(host: Host) -> None:
    assert host.run(START).returncode == 0
    started = (host.conf / "boot-started").read_text()
    (host.conf / "boot-started").write_text(str(int(started) - 100))
    assert host.run(START).returncode == 0
    assert (host.conf / "boot-started").read_text() == str(int(started) - 100)


def test_a_new_boot_forgets_the_workers_of_the_last(host: Host) -> None:
    assert host.run(START).returncode == 0
    assert (host.conf / "workers").exists()
    (host.root / "boot_id").write_text("boot-2\n")
    host.fail("docker", "pull", 100_000)
    # The start-up fails before it lists workers again: the watchdog must see
    # none (and so judge the boot), not the containers of the last boot.
    assert host.run(START, BOOT_HEALTHY_S="1").returncode == 1
    assert not (host.conf / "workers").exists()


def test_one_run_at_a_time(host: Host) -> None:
    lock = host.conf / "start-workers.lock"
    holder = subprocess.Popen(["flock", str(lock), "sleep", "30"])
    try:
        for _ in range(100):  # until the holder has the lock
            if subprocess.run(["flock", "-n", str(lock), "true"], check=False).returncode:
                break
            time.sleep(0.05)
        result = host.run(START)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 0
    assert "already running" in result.stderr
    assert host.calls("docker") == []
