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
    """Sets the IP-Adapter's strength by scaling its value projections.

    With several adapters loaded, one is active per job: its values are
    scaled, every other adapter's are zero, which is exactly its absence.
    """

    def __init__(self, unet: Any) -> None:
        # (adapter index, value projection, its original weight)
        self._layers: list[tuple[int, torch.nn.Linear, torch.Tensor]] = []
        self.adapters = 0
        for processor in unet.attn_processors.values():
            if not hasattr(processor, "to_v_ip"):
                continue
            processor.scale = [1.0] * len(processor.scale)
            self.adapters = max(self.adapters, len(processor.to_v_ip))
            for index, layer in enumerate(processor.to_v_ip):
                self._layers.append((index, layer, layer.weight.detach().clone()))
        if not self._layers:
            raise ValueError("the UNet has no IP-Adapter attention processors")
        self._current = 1.0
        self._active = -1  # every adapter at full strength, as loaded

    @property
    def current(self) -> float:
        """The scale in effect."""
        return self._current

    @property
    def active(self) -> int:
        """The adapter in use (-1 until the first :meth:`set`: all of them)."""
        return self._active

    def set(self, scale: float, adapter: int = 0) -> None:
        """Use `adapter` at `scale` from the next forward pass on; free when unchanged."""
        if (scale, adapter) == (self._current, self._active):
            return
        with torch.no_grad():
            for index, layer, original in self._layers:
                layer.weight.copy_(original * (scale if index == adapter else 0.0))
        self._current, self._active = scale, adapter
