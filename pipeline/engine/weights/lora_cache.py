"""Style LoRA weights kept in host memory, least recently used first out.

An entry holds what a swap copies into the UNet's LoRA slot and nothing
else: the LoRA's A and B matrices, already in peft's key names and the
model's precision (pinned on a GPU host, so the copy to the device runs at
full bandwidth), with the alphas or adapter metadata diffusers derives its
scale from. Reading the file, checking its digest and converting its names
happen once, when it enters the cache.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import structlog
import torch

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class HostLora:
    """One style LoRA, ready to be swapped into the slot."""

    digest: str
    state_dict: dict[str, torch.Tensor]
    network_alphas: dict[str, float] | None
    metadata: dict[str, Any] | None

    @property
    def nbytes(self) -> int:
        """The bytes a swap copies: its weights."""
        return sum(t.numel() * t.element_size() for t in self.state_dict.values())


class HostCache:
    """At most `max_bytes` of :class:`HostLora` entries, by digest.

    An entry larger than the whole budget is used but never kept.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, HostLora] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        """The bytes held now."""
        return sum(entry.nbytes for entry in self._entries.values())

    def __contains__(self, digest: str) -> bool:
        return digest in self._entries

    def get(self, digest: str) -> HostLora | None:
        """The entry of `digest`, now the most recently used; ``None`` when absent."""
        entry = self._entries.get(digest)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(digest)
        return entry

    def put(self, entry: HostLora) -> None:
        """Keep `entry`, dropping the least recently used until it fits."""
        self._entries.pop(entry.digest, None)
        if entry.nbytes > self.max_bytes:
            log.info("style_lora_not_cached", digest=entry.digest, bytes=entry.nbytes)
            return
        while self._entries and self.nbytes + entry.nbytes > self.max_bytes:
            dropped, _ = self._entries.popitem(last=False)
            log.info("style_lora_evicted", digest=dropped)
        self._entries[entry.digest] = entry
