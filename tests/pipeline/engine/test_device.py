"""Which precision a GPU gets when none is asked for."""

from __future__ import annotations

import pytest
import torch

from pipeline.engine.runtime.device import choose_dtype


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
