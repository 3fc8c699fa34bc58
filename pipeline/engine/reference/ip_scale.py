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

The original value weights are copied where the weights live, after the
pipeline is placed on its device, and scaled there in place: a change of
scale is one multiply on the GPU, never a CPU multiply and an upload.

With several adapters loaded, only the job's runs: diffusers skips an
adapter whose processor scale is 0, so the processors' scales say which
adapter is on (1) and which are off (0). Those are constants of a compiled
graph, so each kind of job has its graph, compiled once (at warm-up).
"""

from __future__ import annotations

from typing import Any

import torch


class IPAdapterScale:
    """Sets the IP-Adapter's strength by scaling its value projections.

    With several adapters loaded, one is active per job: its values are
    scaled and every other adapter is switched off, which is exactly its
    absence and costs nothing. Build it once the UNet is on its device.
    """

    def __init__(self, unet: Any) -> None:
        # (adapter index, value projection, its original weight, on the same device)
        self._layers: list[tuple[int, torch.nn.Linear, torch.Tensor]] = []
        self._processors: list[Any] = []
        self.adapters = 0
        for processor in unet.attn_processors.values():
            if not hasattr(processor, "to_v_ip"):
                continue
            processor.scale = [1.0] * len(processor.scale)
            self._processors.append(processor)
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

    def saved_placement(self) -> set[tuple[torch.device, torch.dtype]]:
        """Where the saved original weights live (device, dtype)."""
        return {(original.device, original.dtype) for _, _, original in self._layers}

    def set(self, scale: float, adapter: int = 0) -> None:
        """Use `adapter` at `scale` from the next forward pass on; free when unchanged."""
        if (scale, adapter) == (self._current, self._active):
            return
        if adapter != self._active:
            on = [1.0 if index == adapter else 0.0 for index in range(self.adapters)]
            for processor in self._processors:
                processor.scale = on[: len(processor.scale)]
        with torch.no_grad():
            for index, layer, original in self._layers:
                if index == adapter:
                    # In place, where the weights live: no temporary, no transfer.
                    torch.mul(original, scale, out=layer.weight)
        self._current, self._active = scale, adapter
