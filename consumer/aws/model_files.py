"""Which files of a model folder the pipeline reads: the artefact cache's allow-list.

A model repository as published holds far more than one load reads: the
same weights in full and half precision, as pickles (``.bin``), ONNX,
OpenVINO and Flax copies, single-file checkpoints beside the diffusers
folders, pictures and read-mes. A new instance should fetch only what
diffusers and transformers open:

* every ``.json`` and ``.txt`` (configurations, scheduler, tokenizers:
  ``vocab.json``, ``merges.txt``, ``tokenizer_config.json``, shard indexes);
* in each folder, the safetensors weights under the names the libraries
  load, ``diffusion_pytorch_model*.safetensors`` (diffusers) and
  ``model*.safetensors`` (transformers), shards included. Where a folder has
  both full-precision files and an ``fp16`` variant, only the variant when
  `fp16_variant` is set (a half-precision load reads it), else only the full
  files; where it has one kind only, that kind.

Anything else is skipped, and so are single-file checkpoints at the top of a
diffusers pipeline folder (one with ``model_index.json``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from consumer.aws.s3_download import RemoteObject

FP16_MARK = ".fp16."
CONFIG_SUFFIXES = (".json", ".txt")
WEIGHT_STEMS = ("diffusion_pytorch_model", "model")
PIPELINE_INDEX = "model_index.json"


@dataclass(frozen=True, slots=True)
class Selection:
    """The objects to fetch and those left out."""

    kept: list[RemoteObject]
    skipped: list[RemoteObject]

    @property
    def skipped_bytes(self) -> int:
        """What leaving out the rest saves."""
        return sum(o.size for o in self.skipped)


def _is_weights(name: str) -> bool:
    if not name.endswith(".safetensors"):
        return False
    stem = name.split(".", 1)[0]
    # Shards: model-00001-of-00002.safetensors, diffusion_pytorch_model-00001-...
    return any(stem == s or stem.startswith(f"{s}-") for s in WEIGHT_STEMS)


def select_model_files(
    objects: Sequence[RemoteObject], prefix: str, *, fp16_variant: bool = False
) -> Selection:
    """The objects under `prefix` that a diffusers/transformers load reads."""
    relative = {o.key: PurePosixPath(o.key[len(prefix) :]) for o in objects}
    top = PurePosixPath(".")
    pipeline = any(str(p) == PIPELINE_INDEX for p in relative.values())
    weights = [p for p in relative.values() if _is_weights(p.name)]
    if pipeline:
        weights = [p for p in weights if p.parent != top]
    half = {p.parent for p in weights if FP16_MARK in p.name}
    full = {p.parent for p in weights if FP16_MARK not in p.name}
    wanted = set(weights)
    for folder in half & full:
        drop_variant = not fp16_variant
        wanted -= {
            p for p in weights if p.parent == folder and (FP16_MARK in p.name) == drop_variant
        }
    kept: list[RemoteObject] = []
    skipped: list[RemoteObject] = []
    for item in objects:
        path = relative[item.key]
        keep = path.name.endswith(CONFIG_SUFFIXES) or path in wanted
        (kept if keep else skipped).append(item)
    return Selection(kept, skipped)
