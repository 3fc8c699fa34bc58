"""The UNet's one LoRA slot for catalog styles, hotswapped per job.

The slot is one peft LoRA adapter on every UNet layer of the kinds the
catalog's LoRAs target, at the catalog's largest rank, made before the UNet
is compiled. diffusers (0.42.1) swaps a style's weights into it in place
(``enable_lora_hotswap(target_rank=...)`` before the first load, then
``load_lora_adapter(..., hotswap=True)``): a LoRA of smaller rank fills the
first rows and zeroes the rest, one of fewer layers zeroes the layers it
lacks. Its scale is the slot's scaling tensors, filled in place; nothing the
compiled graph was traced with changes but tensor values, so no swap and no
strength compiles again. ``set_adapters``, which rebuilds adapter state (and
fails on a compiled model), is never called.

The slot sits beside the base weights: a LoRA fused at load (``LORA_PATH``)
stays the base look under every style, and a job without a LoRA style runs
the slot at scale 0, which adds exactly nothing.

Swaps are made only with weights checked to fit (the keys of the slot's
layers, no larger rank): diffusers deletes an adapter whose hotswap fails,
which would leave no slot at all.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
import torch
from safetensors.torch import load as load_safetensors

from pipeline.api.config import PipelineConfig
from pipeline.api.errors import PipelineBrokenError, StyleError
from pipeline.api.lora_files import StyleSlot, bytes_digest, layer_kind, parse_header
from pipeline.api.spec import GenerationSpec
from pipeline.engine.untyped import SDXLPipeline, diffusers
from pipeline.engine.weights.lora_cache import HostCache, HostLora

log = structlog.get_logger(__name__)

SLOT_ADAPTER = "style"
_A, _B = ".lora_A.weight", ".lora_B.weight"
_METADATA_KEY = "lora_adapter_metadata"


class LoraSlot:
    """The LoRA slot of `pipe`'s UNet, holding one style's weights at a time.

    Made on the loaded pipeline before it is placed and compiled; call
    :meth:`settle` once it is on its device.
    """

    def __init__(self, pipe: SDXLPipeline, slot: StyleSlot, cache_bytes: int) -> None:
        self.slot = slot
        self.cache = HostCache(cache_bytes)
        self._pipe = pipe
        self._unet = pipe.unet
        # Read once: diffusers walks every module to answer either.
        self._dtype: torch.dtype = self._unet.dtype
        self._pin = False
        self._shapes = _slot_layers(self._unet, slot)
        if not self._shapes:
            raise StyleError(
                f"the model's UNet has no layers of the slot's kinds ({slot.describe()})"
            )
        pipe.enable_lora_hotswap(target_rank=slot.rank)
        self._unet.load_lora_adapter(
            _zero_lora(self._shapes, slot.rank, self._dtype),
            prefix="unet",
            adapter_name=SLOT_ADAPTER,
        )
        self._layers = [self._unet.get_submodule(name) for name in self._shapes]
        self._bases = [1.0] * len(self._layers)
        self._scale = 1.0
        self.loaded: str | None = None
        self.swaps = 0
        self.set_scale(0.0)
        log.info("style_slot_ready", layers=len(self._layers), rank=slot.rank)

    @property
    def slot_bytes(self) -> int:
        """The bytes of the slot's weights (what a full swap writes)."""
        return sum(
            t.numel() * t.element_size()
            for layer in self._layers
            for t in (layer.lora_A[SLOT_ADAPTER].weight, layer.lora_B[SLOT_ADAPTER].weight)
        )

    def settle(self, loras: Sequence[tuple[str, str, str]] = ()) -> None:
        """Once the pipeline is on its device: finish the slot, read the catalog's LoRAs.

        peft makes the scaling tensors where the layers were when the slot
        was made (before placement), and moving the model moves no plain
        tensor attribute: they are moved here, before the first (compiling)
        run, so the graph is traced with these very tensors. Then each
        ``(style, path, digest)`` of `loras` is read and checked against the
        model (raising :class:`StyleError` naming the style), and kept in the
        host cache as far as its budget allows.
        """
        for layer in self._layers:
            device = layer.lora_B[SLOT_ADAPTER].weight.device
            layer.scaling[SLOT_ADAPTER] = layer.scaling[SLOT_ADAPTER].to(device)
            # Pinned host memory copies to a GPU at full bandwidth.
            self._pin = device.type == "cuda"
        for style, path, digest in loras:
            self.entry(style, path, digest)

    def apply(self, spec: GenerationSpec) -> None:
        """Make the slot hold the job's style: its LoRA at its scale, or scale 0."""
        if spec.style_lora is None or spec.style_digest is None or spec.style_lora_scale == 0:
            self.set_scale(0.0)
            return
        if spec.style_digest != self.loaded:
            self._swap(self.entry(spec.style or "", spec.style_lora, spec.style_digest))
        self.set_scale(spec.style_lora_scale)

    def entry(self, style: str, path: str, digest: str) -> HostLora:
        """The host-memory entry of a style's LoRA file, read and checked on a miss."""
        entry = self.cache.get(digest)
        if entry is None:
            entry = self._read(style, path, digest)
            self.cache.put(entry)
        return entry

    def set_scale(self, scale: float) -> None:
        """Run the slot's LoRA at `scale` (its own alphas times `scale`), in place."""
        if scale == self._scale:
            return
        for layer, base in zip(self._layers, self._bases, strict=True):
            layer.scaling[SLOT_ADAPTER].fill_(base * scale)
        self._scale = scale

    def _swap(self, entry: HostLora) -> None:
        self.loaded = None
        try:
            self._unet.load_lora_adapter(
                entry.state_dict,
                prefix="unet",
                network_alphas=entry.network_alphas,
                metadata=entry.metadata,
                adapter_name=SLOT_ADAPTER,
                hotswap=True,
            )
        except Exception as error:
            # Checked weights never get here; if they do, diffusers has
            # deleted the adapter and the compiled UNet no longer matches.
            raise PipelineBrokenError(f"the style LoRA slot failed a swap: {error}") from error
        # diffusers set each layer's scaling to the LoRA's alpha / rank;
        # read once (one device sync), the base of every later strength.
        scalings = [layer.scaling[SLOT_ADAPTER] for layer in self._layers]
        self._bases = [float(v) for v in torch.stack(scalings).tolist()]
        self._scale = 1.0
        self.loaded = entry.digest
        self.swaps += 1

    def _read(self, style: str, path: str, digest: str) -> HostLora:
        try:
            data = Path(path).read_bytes()
        except OSError as error:
            raise StyleError(f"style {style!r}: {path} cannot be read: {error.strerror}") from None
        if (found := bytes_digest(data)) != digest:
            raise StyleError(
                f"style {style!r}: {path} changed since its catalog was read "
                f"(digest {found}, expected {digest})"
            )
        try:
            _, metadata = parse_header(data)
            tensors = load_safetensors(data)
            del data
            state, alphas, _ = self._pipe.lora_state_dict(
                tensors, unet_config=self._unet.config, return_lora_metadata=True
            )
            state = diffusers.utils.convert_unet_state_dict_to_peft(state)
        except (ValueError, KeyError, RuntimeError, OSError) as error:
            raise StyleError(
                f"style {style!r}: {path} is not a LoRA diffusers reads: {error}"
            ) from None
        if (reason := self._misfit(state)) is not None:
            raise StyleError(f"style {style!r}: {reason}")
        weights = {
            key: _host_tensor(tensor, self._dtype, pin=self._pin) for key, tensor in state.items()
        }
        adapter = json.loads(metadata[_METADATA_KEY]) if _METADATA_KEY in metadata else None
        log.info("style_lora_read", style=style, digest=digest, tensors=len(weights))
        return HostLora(digest, weights, alphas or None, adapter)

    def _misfit(self, state: dict[str, torch.Tensor]) -> str | None:
        """Why converted weights `state` cannot be swapped in; ``None`` when they fit."""
        for key, tensor in state.items():
            if not key.startswith("unet."):
                return f"{key} is not a UNet weight; only the UNet's LoRA is hotswapped"
            name, part = _module_of(key[len("unet.") :])
            shape = self._shapes.get(name)
            if shape is None or part is None:
                return f"it targets {name}, which the slot does not hold ({self.slot.describe()})"
            rank = tensor.shape[0] if part == _A else tensor.shape[1]
            if rank > self.slot.rank:
                return f"its rank {rank} at {name} is over the slot's {self.slot.rank}"
            features = tensor.shape[1] if part == _A else tensor.shape[0]
            if features != (shape[1] if part == _A else shape[0]):
                return f"its {name} weights do not fit the model's layer (a LoRA of another model?)"
        return None


def open_slot(pipe: SDXLPipeline, config: PipelineConfig) -> LoraSlot | None:
    """The styles' LoRA slot `config` asks for in `pipe`'s UNet, or ``None``."""
    if config.style_slot is None:
        return None
    return LoraSlot(pipe, config.style_slot, config.style_cache_bytes)


def _slot_layers(unet: Any, slot: StyleSlot) -> dict[str, tuple[int, int]]:
    """The UNet's linear layers of the slot's kinds: name to (out, in) features."""
    return {
        name: (module.out_features, module.in_features)
        for name, module in unet.named_modules()
        if isinstance(module, torch.nn.Linear) and layer_kind(name) in slot.kinds
    }


def _zero_lora(
    shapes: dict[str, tuple[int, int]], rank: int, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    # A LoRA of the slot's full rank on every slot layer, all zeros: the slot
    # starts out adding nothing, and every later LoRA is a subset of it.
    state = {}
    for name, (out, inp) in shapes.items():
        state[f"unet.{name}{_A}"] = torch.zeros(rank, inp, dtype=dtype)
        state[f"unet.{name}{_B}"] = torch.zeros(out, rank, dtype=dtype)
    return state


def _module_of(key: str) -> tuple[str, str | None]:
    for part in (_A, _B):
        if key.endswith(part):
            return key[: -len(part)], part
    return key, None


def _host_tensor(tensor: torch.Tensor, dtype: torch.dtype, *, pin: bool) -> torch.Tensor:
    host = tensor.to(dtype=dtype).contiguous()
    return host.pin_memory() if pin else host
