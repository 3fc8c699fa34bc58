"""Which device and precision a model gets, and how GPU memory is given back."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch._inductor import cudagraph_trees

from pipeline.api.errors import StartRefusedError
from pipeline.engine.runtime import device
from pipeline.engine.runtime.device import choose_device, choose_dtype, free_memory


@pytest.mark.parametrize(("native", "expected"), [(True, torch.bfloat16), (False, torch.float16)])
def test_bfloat16_only_where_the_gpu_runs_it_natively(
    monkeypatch: pytest.MonkeyPatch, native: bool, expected: torch.dtype
) -> None:
    def is_bf16_supported(including_emulation: bool = True) -> bool:
        # A pre-Ampere GPU: bfloat16 only through emulation.
        return native or including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert choose_dtype(torch.device("cuda"), None) == expected
    assert choose_dtype(torch.device("cuda"), "float32") == torch.float32


class Calls:
    """Records the order of calls to the functions it stands in for."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def stand_in(self, name: str) -> Any:
        return lambda *args, **kwargs: self.made.append(name)


def test_freeing_gpu_memory_drops_cuda_graphs_before_emptying_the_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = Calls()
    monkeypatch.setattr(cudagraph_trees, "reset_cudagraph_trees", calls.stand_in("graphs"))
    monkeypatch.setattr(torch.cuda, "empty_cache", calls.stand_in("cache"))
    free_memory(torch.device("cuda"))
    # A CUDA graph's private pool is not the cache's: it must go first.
    assert calls.made == ["graphs", "cache"]
    calls.made.clear()
    free_memory(torch.device("cpu"))
    assert calls.made == []


@pytest.fixture
def without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.usefixtures("without_cuda")
def test_a_real_model_without_a_gpu_is_refused_unless_the_cpu_is_asked_for() -> None:
    with pytest.raises(StartRefusedError, match="DEVICE is not set and no CUDA GPU is visible"):
        choose_device(None, needs_gpu=True)
    with pytest.raises(StartRefusedError, match="set DEVICE=cpu"):
        choose_device("", needs_gpu=True)
    assert choose_device("cpu", needs_gpu=True) == torch.device("cpu")
    # The built-in models run wherever they are.
    assert choose_device(None) == torch.device("cpu")


@pytest.mark.usefixtures("without_cuda")
@pytest.mark.parametrize(
    ("cuda_build", "device_node", "warning", "cause"),
    [
        (None, False, "", "is a CPU-only build"),
        (
            "12.8",
            False,
            "",
            "/dev/nvidiactl is missing, so no GPU was passed in: start the "
            "container with --gpus all",
        ),
        (
            "12.8",
            True,
            "The NVIDIA driver on your system is too old (found version 11040)",
            "a GPU is passed in but The NVIDIA driver on your system is too old (found version "
            "11040): the NVIDIA driver must support CUDA 12.8",
        ),
        ("12.8", True, "", "a GPU is passed in but CUDA did not start"),
    ],
)
def test_the_refusal_names_the_likely_cause(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    cuda_build: str | None,
    device_node: bool,
    warning: str,
    cause: str,
) -> None:
    def is_available() -> bool:
        if warning:
            warnings.warn(warning, UserWarning, stacklevel=1)
        return False

    monkeypatch.setattr(torch.cuda, "is_available", is_available)
    monkeypatch.setattr(torch.version, "cuda", cuda_build)
    node = tmp_path / "nvidiactl"
    if device_node:
        node.touch()
    monkeypatch.setattr(device, "NVIDIA_CONTROL_DEVICE", node)
    with pytest.raises(StartRefusedError) as refused:
        choose_device(None, needs_gpu=True)
    assert cause in str(refused.value).replace(str(node), "/dev/nvidiactl")
