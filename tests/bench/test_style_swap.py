"""`python -m bench.style_swap`'s SDXL figures: what one swap moves into the slot."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")


def test_the_sdxl_figures_count_its_attention_projections() -> None:
    from bench.style_swap import sdxl_swap

    out = sdxl_swap(1)
    # SDXL base's UNet: 70 transformer blocks, two attentions each, four
    # projections an attention (q, k, v, out).
    attention = out["attention"]
    assert attention["layers"] == 70 * 2 * 4
    # A rank-r LoRA of a layer holds r x (in + out) values, two bytes each.
    assert attention["bytes_fp16"][64] == 2 * attention["bytes_fp16"][32]
    assert round(attention["bytes_fp16"][32] / 2**20, 1) == 88.6
    assert out["every_slot_kind"]["layers"] > attention["layers"]
    assert out["bookkeeping"]["layers"] == attention["layers"]
    assert out["bookkeeping"]["wall_ms"] > 0
