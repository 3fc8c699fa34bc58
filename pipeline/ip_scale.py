"""The IP-Adapter's strength per job, without recompiling a compiled UNet.

diffusers applies the scale as a Python float on each attention processor
(``hidden + scale * attention(q, k_ip, v_ip)``). A compiled UNet treats that
float as a constant, so every new ``ip_adapter_scale`` would compile the UNet
again (about a minute for SDXL) until torch gives up and runs it uncompiled.
Attention is linear in its values, so ``scale * attention(q, k, v)`` equals
``attention(q, k, scale * v)``: the processors keep a fixed scale of 1 and the
value projections are scaled instead. Weights are graph inputs, not
constants, so changing them never recompiles; a scale of 0 gives values of 0
and exactly the picture without the adapter.
"""

from __future__ import annotations

from typing import Any

import torch


class IPAdapterScale:
    """Sets the IP-Adapter's strength by scaling its value projections."""

    def __init__(self, unet: Any) -> None:
        self._layers: list[tuple[torch.nn.Linear, torch.Tensor]] = []
        for processor in unet.attn_processors.values():
            if not hasattr(processor, "to_v_ip"):
                continue
            processor.scale = [1.0] * len(processor.scale)
            for layer in processor.to_v_ip:
                self._layers.append((layer, layer.weight.detach().clone()))
        self._current = 1.0
        if not self._layers:
            raise ValueError("the UNet has no IP-Adapter attention processors")

    @property
    def current(self) -> float:
        """The scale in effect."""
        return self._current

    def set(self, scale: float) -> None:
        """Use `scale` from the next forward pass on; free when unchanged."""
        if scale == self._current:
            return
        with torch.no_grad():
            for layer, original in self._layers:
                layer.weight.copy_(original * scale)
        self._current = scale
