"""What a LoRA ``.safetensors`` file holds, read from its header without torch.

A safetensors file starts with an 8-byte little-endian length and that many
bytes of JSON: each tensor's dtype, shape and byte range, and an optional
``__metadata__`` map. That is enough to say which layers a LoRA targets, its
rank and its size, so a style catalog is checked (at start, on a reload and
by ``illustrator styles check``) before a byte of weights is read.

Three naming schemes are understood, the ones diffusers loads for SDXL:

* diffusers and peft: ``unet.<module>.lora_A.weight`` / ``lora_B.weight``
  (or ``lora.down`` / ``lora.up``; the older attention-processor form
  ``<attention>.processor.to_q_lora.down.weight`` too);
* kohya-ss and A1111: ``lora_unet_<module>.lora_down.weight`` /
  ``lora_up.weight`` / ``alpha``, with the module path joined by ``_``;
* either for the text encoders: ``text_encoder.`` and ``text_encoder_2.``,
  ``lora_te_``, ``lora_te1_`` and ``lora_te2_``.

The layers a LoRA targets are named by kind, the module name's last part:
``to_q``, ``ff.net.2`` and so on (see :data:`SLOT_KINDS`).
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

# The safetensors format allows headers of up to 100 MB.
MAX_HEADER_BYTES = 100 * 1024 * 1024
DIGEST_CHARS = 16
_CHUNK = 8 * 1024 * 1024

# The UNet layers a style's LoRA may target: the linear layers of SDXL's
# transformer blocks (attention projections, feed-forward, the blocks' own
# input and output projections). Convolutions, time embeddings and the text
# encoders are never hotswapped.
SLOT_KINDS = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "ff.net.0.proj",
    "ff.net.2",
    "proj_in",
    "proj_out",
)

_TEXT_PREFIXES = ("text_encoder.", "text_encoder_2.", "lora_te_", "lora_te1_", "lora_te2_", "te_")
_DIFFUSERS_SUFFIX = re.compile(r"\.(lora_A|lora_B|lora\.down|lora\.up)\.weight$|\.alpha$")
_PROCESSOR = re.compile(r"\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$")
_KOHYA_SUFFIX = re.compile(r"\.(lora_down\.weight|lora_up\.weight|alpha|dora_scale)$")
_DOWN = (".lora_A.weight", ".lora.down.weight", ".lora_down.weight", "_lora.down.weight")


class LoraFileError(ValueError):
    """The file is missing, or not a readable safetensors file."""


@dataclass(frozen=True, slots=True)
class LoraFacts:
    """What a LoRA file's header says about it.

    Attributes:
        rank: the largest rank of any of its layers (0 with no LoRA layer).
        kinds: the kinds of UNet layer it targets (``to_q``, ``ff.net.2``, ...).
        unet_layers: how many UNet layers it targets.
        text_encoder_layers: how many text-encoder tensors it holds.
        unknown: the first few keys of no scheme understood (LoKr, LoHa, DoRA ...).
        size: the file's size in bytes.
        dtype: the dtype of its weights (``F16``, ``BF16``, ``F32``, or ``mixed``).
    """

    rank: int
    kinds: frozenset[str]
    unet_layers: int
    text_encoder_layers: int
    unknown: tuple[str, ...]
    size: int
    dtype: str


def read_header(path: str | Path) -> tuple[dict[str, dict[str, object]], dict[str, str]]:
    """The tensors' entries and the ``__metadata__`` map of the safetensors file at `path`.

    Raises :class:`LoraFileError` for a missing, unreadable or malformed file.
    """
    file = Path(path)
    try:
        with file.open("rb") as handle:
            size = file.stat().st_size
            prefix = handle.read(8)
            length = _header_length(prefix, size, file.name)
            raw = handle.read(length)
    except FileNotFoundError:
        raise LoraFileError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise LoraFileError(f"{path} is a folder, not a .safetensors file") from None
    except OSError as error:
        raise LoraFileError(f"{path} cannot be read: {error.strerror}") from None
    return _decode(raw, file.name)


def parse_header(
    data: bytes, name: str = "the file"
) -> tuple[dict[str, dict[str, object]], dict[str, str]]:
    """:func:`read_header` of a whole safetensors file already read into `data`."""
    length = _header_length(data[:8], len(data), name)
    return _decode(data[8 : 8 + length], name)


def _header_length(prefix: bytes, size: int, name: str) -> int:
    if len(prefix) < 8:
        raise LoraFileError(f"{name} is not a safetensors file (too short)")
    (length,) = struct.unpack("<Q", prefix)
    if length > min(MAX_HEADER_BYTES, size - 8):
        raise LoraFileError(f"{name} is not a safetensors file (bad header length)")
    return int(length)


def _decode(raw: bytes, name: str) -> tuple[dict[str, dict[str, object]], dict[str, str]]:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise LoraFileError(f"{name} is not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise LoraFileError(f"{name} is not a safetensors file (header is not an object)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise LoraFileError(f"{name}: its __metadata__ is not a map of strings")
    for key, entry in header.items():
        if not (isinstance(entry, dict) and _is_shape(entry.get("shape"))):
            raise LoraFileError(f"{name}: tensor {key!r} has no valid shape")
    return header, metadata


def _is_shape(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(n, int) and n >= 0 for n in value)


def inspect_lora(path: str | Path) -> LoraFacts:
    """The :class:`LoraFacts` of the LoRA file at `path`, from its header alone.

    Raises :class:`LoraFileError` for a missing or malformed file.
    """
    header, _ = read_header(path)
    return facts_of(header, Path(path).stat().st_size)


def facts_of(header: Mapping[str, Mapping[str, object]], size: int) -> LoraFacts:
    """The facts of a LoRA whose tensors (name to dtype and shape) are `header`."""
    rank = 0
    modules: set[str] = set()
    kinds: set[str] = set()
    text = 0
    unknown: list[str] = []
    for key, entry in header.items():
        if key.startswith(_TEXT_PREFIXES):
            text += 1
            continue
        module = unet_module(key)
        if module is None:
            unknown.append(key)
            continue
        modules.add(module)
        kinds.add(layer_kind(module))
        shape = entry.get("shape")
        if isinstance(shape, list) and len(shape) >= 2:
            rank = max(rank, int(shape[0] if key.endswith(_DOWN) else shape[1]))
    dtypes = {str(entry.get("dtype")) for entry in header.values()}
    return LoraFacts(
        rank=rank,
        kinds=frozenset(kinds),
        unet_layers=len(modules),
        text_encoder_layers=text,
        unknown=tuple(sorted(unknown)[:5]),
        size=size,
        dtype=dtypes.pop() if len(dtypes) == 1 else "mixed",
    )


def unet_module(key: str) -> str | None:
    """The UNet module a tensor `key` belongs to, in the key's own scheme
    (dots for diffusers, underscores for kohya); ``None`` for a key of no
    understood scheme or a weight no LoRA layer has (DoRA's magnitudes)."""
    if key.startswith("unet."):
        if (match := _PROCESSOR.search(key)) is not None:
            name = "to_out.0" if match.group(1) == "to_out" else match.group(1)
            return key[len("unet.") : match.start()] + "." + name
        match = _DIFFUSERS_SUFFIX.search(key)
        return key[len("unet.") : match.start()] if match else None
    if key.startswith("lora_unet_"):
        match = _KOHYA_SUFFIX.search(key)
        if match is None or match.group(1) == "dora_scale":
            return None
        return key[len("lora_unet_") : match.start()]
    return None


def layer_kind(module: str) -> str:
    """The kind of a UNet module: the :data:`SLOT_KINDS` name its path ends
    with (in dots or underscores), else its last part."""
    for kind in SLOT_KINDS:
        if module.endswith(("." + kind, "_" + kind.replace(".", "_"))) or module == kind:
            return kind
    if "." in module:
        return module.rsplit(".", 1)[-1]
    # kohya: the part after the last block index (``..._resnets_0_time_emb_proj``).
    return re.sub(r"^.*_\d+_", "", module)


@dataclass(frozen=True, slots=True)
class StyleSlot:
    """The one LoRA slot of the UNet: the rank it holds and the kinds of layer.

    Set at start from the catalog (the largest rank, every kind its LoRAs
    target), fixed for the worker's life: a LoRA fits when it targets only
    these kinds at no larger a rank.
    """

    rank: int
    kinds: frozenset[str]

    def refusal(self, facts: LoraFacts) -> str | None:
        """Why a LoRA with `facts` cannot go into this slot; ``None`` when it fits."""
        if (general := refusal(facts)) is not None:
            return general
        if not self.kinds:
            return "this worker has no LoRA slot (no style had a LoRA when it started)"
        outside = sorted(facts.kinds - self.kinds)
        if outside:
            return (
                f"it targets {', '.join(outside)}, outside the slot's layers "
                f"({', '.join(sorted(self.kinds))})"
            )
        if facts.rank > self.rank:
            return f"its rank {facts.rank} is over the slot's {self.rank}"
        return None

    def describe(self) -> str:
        """One line for logs and the CLI."""
        return f"rank {self.rank}, layers {', '.join(sorted(self.kinds))}"


def refusal(facts: LoraFacts) -> str | None:
    """Why a LoRA with `facts` can go into no slot at all; ``None`` when it may."""
    if facts.text_encoder_layers:
        return (
            f"it has {facts.text_encoder_layers} text-encoder tensors; "
            "text-encoder LoRAs cannot be hotswapped"
        )
    if facts.unknown:
        return f"keys of no LoRA format understood: {', '.join(facts.unknown)}"
    if not facts.unet_layers or facts.rank < 1:
        return "it holds no UNet LoRA layer"
    outside = sorted(facts.kinds - set(SLOT_KINDS))
    if outside:
        return (
            f"it targets {', '.join(outside)}; a style's LoRA may target only "
            f"{', '.join(SLOT_KINDS)}"
        )
    return None


def slot_for(facts: Iterable[LoraFacts]) -> StyleSlot | None:
    """The slot that holds every LoRA of `facts` (the largest rank, every kind);
    ``None`` when there is none."""
    every = list(facts)
    if not every:
        return None
    kinds = frozenset().union(*(f.kinds for f in every))
    return StyleSlot(rank=max(f.rank for f in every), kinds=kinds)


def file_digest(path: str | Path) -> str:
    """The short digest of a file's bytes (the first :data:`DIGEST_CHARS` hex
    characters of its SHA-256), as reported in completion events."""
    sha = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()[:DIGEST_CHARS]


def bytes_digest(data: bytes) -> str:
    """:func:`file_digest` of bytes already read."""
    return hashlib.sha256(data).hexdigest()[:DIGEST_CHARS]
