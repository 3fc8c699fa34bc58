"""The image as the instance runs it: ``infra/start-workers.sh``'s own command
line, one pretend GPU, builtin:tiny, moto on this machine for AWS.

One worker serves the module: a memory and a subject job end to end, its
health check, its user, its read-only root, its environment.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from PIL import Image

from consumer.cli import samples
from tests.image.conftest import IMAGE
from tests.support.aws import Stack, make_stack
from tests.support.containers import Container, Engine, health_check
from tests.support.instance import INSTANCE_ID, Instance, worker_environment

USER = "image-user"
SIZE = 64
TOKEN = f"image-test-token-{uuid.uuid4().hex}"
# The worker's user, as the Dockerfile fixes it (host caches are owned by it).
UID = "10001"


@dataclass(frozen=True)
class Deployed:
    """The worker start-workers.sh started, and the stack it serves."""

    instance: Instance
    stack: Stack
    worker: Container


@pytest.fixture(scope="module")
def deployed(instance: Instance, moto_endpoint: str) -> Deployed:
    stack = make_stack(moto_endpoint, visibility_timeout=120)
    stack.put(f"avatars/{USER}.png", samples.avatar())
    stack.put(f"subjects/{USER}.jpg", samples.photo())
    # As the template deploys it: the worker reads its token from Secrets
    # Manager, and neither the script nor the container's settings hold it.
    secret = stack.client("secretsmanager").create_secret(
        Name=f"image-test-{uuid.uuid4().hex}", SecretString=TOKEN
    )
    signing = {"AUTH_ENABLED": "true", "AUTH_TOKEN_SECRET_ID": secret["ARN"]}
    started = instance.start({**stack.environment(), **worker_environment(), **signing})
    worker = instance.worker()
    assert started.returncode == 0, started.stderr + worker.logs()
    return Deployed(instance, stack, worker)


def collect(stack: Stack, count: int, within: float) -> list[dict[str, Any]]:
    """The first `count` events, waiting on the observer queue's long poll."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + within
    while len(events) < count and time.monotonic() < deadline:
        events += stack.events(wait_s=2)
    return events


def test_the_script_gives_its_command_line_for_one_gpu(deployed: Deployed) -> None:
    runs = [c for c in deployed.instance.docker_calls() if c[:1] == ["run"]]
    assert len(runs) == 1
    run = runs[0]
    assert run[-1] == IMAGE
    assert run[run.index("--gpus") + 1] == "device=0"
    assert "--read-only" in run
    assert run[run.index("--tmpfs") + 1] == "/tmp"
    config = deployed.worker.config()
    assert config["HostConfig"]["ReadonlyRootfs"] is True
    assert config["State"]["Running"] is True
    environment = deployed.worker.process_environment()
    assert environment["WORKER_ID"] == f"{INSTANCE_ID}-gpu0"
    assert environment["HEALTH_PORT"] == str(deployed.instance.port)


def test_a_memory_and_a_subject_job_end_to_end(deployed: Deployed) -> None:
    stack = deployed.stack
    common = {"user_id": USER, "num_inference_steps": 2, "width": SIZE, "height": SIZE}
    stack.send({"job_id": "m1", "kind": "memory", "prompt": "a walk", **common}, token=TOKEN)
    stack.send({"job_id": "s1", "kind": "subject", **common}, token=TOKEN)
    events = {e["job_id"]: e for e in collect(stack, 2, within=180)}
    assert sorted(events) == ["m1", "s1"], deployed.worker.logs()[-3000:]
    s3 = stack.client("s3")
    for event in events.values():
        assert event["status"] == "succeeded", event
        assert event["worker_id"] == f"{INSTANCE_ID}-gpu0"
        (picture,) = event["data"]
        bucket, _, key = picture["s3_uri"].removeprefix("s3://").partition("/")
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert Image.open(io.BytesIO(body)).size == (SIZE, SIZE)
    # Nothing failed on the way, on a read-only root with /tmp and the cache.
    records = [json.loads(line) for line in deployed.worker.logs().splitlines() if line[:1] == "{"]
    assert records
    assert [r for r in records if r.get("level") in ("error", "critical")] == []
    assert "Read-only file system" not in deployed.worker.logs()


def test_the_health_check_exits_zero_once_ready(deployed: Deployed, engine: Engine) -> None:
    check = health_check(engine.inspect("image", IMAGE))
    assert check[0] == "CMD"
    assert deployed.worker.exec(*check[1:]).returncode == 0
    if engine.name == "podman":
        # Podman runs the image's own HEALTHCHECK (kept by the Docker format).
        assert engine("healthcheck", "run", deployed.worker.name).returncode == 0


def test_the_process_runs_as_uid_10001(deployed: Deployed) -> None:
    status = deployed.worker.exec("cat", "/proc/1/status").stdout
    ids = {line.split(":")[0]: line.split()[1:] for line in status.splitlines()}
    assert ids["Uid"] == [UID] * 4
    assert ids["Gid"] == [UID] * 4


@pytest.mark.parametrize(
    ("path", "writable"),
    [
        ("/opt/venv/lib/planted", False),
        ("/home/illustrator/planted", False),
        ("/etc/planted", False),
        ("/tmp/planted", True),
        ("/var/cache/illustrator/planted", True),
    ],
)
def test_it_writes_only_the_cache_and_tmp(deployed: Deployed, path: str, writable: bool) -> None:
    wrote = deployed.worker.exec("python", "-c", f"open({path!r}, 'w').write('x')")
    assert (wrote.returncode == 0) is writable, wrote.stderr


def test_the_cache_volume_is_the_host_folder_owned_by_the_worker(deployed: Deployed) -> None:
    cache = deployed.instance.cache
    assert (cache.stat().st_uid, cache.stat().st_gid) == (int(UID), int(UID))
    planted = deployed.worker.exec("touch", "/var/cache/illustrator/seen-from-the-host")
    assert planted.returncode == 0
    assert (cache / "seen-from-the-host").exists()


def test_no_secret_in_the_environment(deployed: Deployed) -> None:
    environment = deployed.worker.process_environment()
    declared = deployed.worker.config()["Config"]["Env"]
    assert [k for k, v in environment.items() if TOKEN in v] == []
    assert [e for e in declared if TOKEN in e] == []


def test_the_image_declares_no_secret(engine: Engine) -> None:
    declared = engine.inspect("image", IMAGE)["Config"]["Env"]
    names = [entry.partition("=")[0] for entry in declared]
    assert [n for n in names if any(w in n for w in ("TOKEN", "SECRET", "PASSWORD", "KEY"))] == []
