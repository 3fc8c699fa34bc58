"""Compiling in the image: inductor turns a graph into C++ with the image's
g++ against its Python headers, as the deployed worker would (uid 10001, a
read-only root, /tmp a tmpfs), and keeps what it compiled on the cache volume,
so a restarted container compiles nothing again."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from consumer.cli import samples
from tests.image.conftest import IMAGE
from tests.image.test_deployed import collect
from tests.support.aws import make_stack
from tests.support.containers import Engine
from tests.support.instance import Instance, worker_environment

# A few fused operations: one C++ kernel or two, a minute at most.
COMPILE = r"""
import json, torch
from torch._dynamo.utils import counters
def f(x, y):
    return torch.nn.functional.gelu(x @ y).sum(dim=-1) * 2 + 1
x, y = torch.randn(64, 64), torch.randn(64, 64)
out = torch.compile(f)(x, y)
print(json.dumps({
    "equal": bool(torch.allclose(out, f(x, y), atol=1e-4)),
    "hits": counters["inductor"]["fxgraph_cache_hit"],
    "misses": counters["inductor"]["fxgraph_cache_miss"],
}))
"""


def test_inductor_compiles_and_a_restart_reuses_the_cache_volume(
    engine: Engine, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    os.chown(cache, 10001, 10001)
    first = engine.run_once(IMAGE, cache, "-c", COMPILE)
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads(first.stdout.splitlines()[-1]) == {"equal": True, "hits": 0, "misses": 1}
    compiled = list((cache / "torchinductor").rglob("*.so"))
    assert compiled, "no compiled kernel on the cache volume"

    again = engine.run_once(IMAGE, cache, "-c", COMPILE)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout.splitlines()[-1]) == {"equal": True, "hits": 1, "misses": 0}


@pytest.mark.skipif(
    os.environ.get("IMAGE_COMPILE_SERVICE") != "1",
    reason="the whole UNet compiled on the CPU takes the better part of an hour: "
    "IMAGE_COMPILE_SERVICE=1",
)
@pytest.mark.timeout(3600)
def test_the_deployed_worker_compiles_with_torch_compile_and_serves_a_job(
    fresh_instance: Instance, moto_endpoint: str
) -> None:
    stack = make_stack(moto_endpoint, visibility_timeout=600)
    stack.put("avatars/u1.png", samples.avatar())
    settings = {**stack.environment(), **worker_environment(), "TORCH_COMPILE": "true"}
    started = fresh_instance.start(settings, boot_healthy_s=3300)
    worker = fresh_instance.worker()
    assert started.returncode == 0, started.stderr + worker.logs()
    request = {"job_id": "c1", "kind": "memory", "user_id": "u1", "prompt": "a walk"}
    stack.send({**request, "num_inference_steps": 2, "width": 64, "height": 64})
    (event,) = collect(stack, 1, within=600)
    assert (event["job_id"], event["status"]) == ("c1", "succeeded"), worker.logs()[-3000:]
    assert '"torch_compile_enabled"' in worker.logs()
    assert list((fresh_instance.cache / "torchinductor").rglob("*.so"))
