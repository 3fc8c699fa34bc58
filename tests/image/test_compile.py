"""Compiling in the image: inductor turns a graph into C++ with the image's
g++ against its Python headers, as the deployed worker would (uid 10001, a
read-only root, /tmp a tmpfs), and keeps what it compiled on the cache volume,
so a restarted container compiles nothing again."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.image.conftest import IMAGE
from tests.support.containers import Engine

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
