"""CLIP's real BPE vocabulary, read from the file ``open_clip_torch`` ships.

``builtin:tiny`` uses it so that its prompts are as many tokens long as the
real model's (a 2000-character story is some 420 tokens, not 2000 letters),
and tests see what long prompts do. The vocabulary is derived from
``bpe_simple_vocab_16e6.txt.gz`` the way OpenAI's CLIP tokenizer derives it:
the 256 byte symbols, the same with the word-end mark, the first 48,894
merges' results, then the start and end tokens: 49,408 tokens, numbered as
in the real model.

The package is only a file source here: it is located without being
imported (importing it would need torchvision), and it is not one of the
project's dependencies, since its own pull in torchvision. Without the file
the vocabulary is the byte-level one that needs no data: the same 49,408
ids, the 512 byte symbols and the start and end tokens where CLIP has them,
and no merges, so every character is a token. The model's weights are the
same; only its prompts are longer in tokens, and its pictures differ from
those drawn with the real vocabulary. That is said once in the log
(``clip_vocabulary_missing``), never silently.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path

import structlog

from pipeline.api.errors import ModelLoadError

log = structlog.get_logger(__name__)

BPE_PACKAGE = "open_clip"
BPE_INSTALL_HINT = "pip install --no-deps open_clip_torch"
BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
MERGES = 49152 - 256 - 2
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
VOCAB_SIZE = 2 * 256 + MERGES + 2


def byte_alphabet() -> list[str]:
    """The byte-level BPE alphabet: one printable character for each byte.

    Printable Latin-1 bytes stand for themselves; the others map above U+0100,
    in byte order (GPT-2's and CLIP's ``bytes_to_unicode``, in its order).
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    others = [chr(0x100 + n) for n in range(256 - len(printable))]
    return [chr(c) for c in printable] + others


def bpe_file() -> Path:
    """The vocabulary file inside the installed ``open_clip_torch`` package."""
    spec = importlib.util.find_spec(BPE_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder, BPE_FILE)
        if path.is_file():
            return path
    raise ModelLoadError(
        f"builtin:tiny needs CLIP's BPE vocabulary {BPE_FILE} from the open_clip_torch "
        f"package; install it with `{BPE_INSTALL_HINT}`"
    )


Vocabulary = tuple[dict[str, int], tuple[tuple[str, str], ...]]


@functools.cache
def clip_bpe() -> Vocabulary:
    """(vocabulary, merges) of CLIP's tokenizer, read once per process.

    The byte-level vocabulary (:func:`byte_vocabulary`) when CLIP's file is
    not installed.
    """
    try:
        path = bpe_file()
    except ModelLoadError:
        log.warning(
            "clip_vocabulary_missing",
            message=f"builtin:tiny tokenizes byte by byte without {BPE_FILE}",
            install=BPE_INSTALL_HINT,
        )
        return byte_vocabulary()
    with gzip.open(path, "rt", encoding="utf-8") as file:
        lines = file.read().split("\n")[1 : MERGES + 1]
    merges = tuple((left, right) for left, right in (line.split() for line in lines))
    return _numbered([left + right for left, right in merges]), merges


def byte_vocabulary() -> Vocabulary:
    """CLIP's 49,408 ids without its merges: every character is a token.

    The ids the merges would name hold placeholders no text ever produces,
    so the ids of the byte symbols and of the start and end tokens, and the
    vocabulary's size, are CLIP's.
    """
    return _numbered([f"<|merge{index}|>" for index in range(MERGES)]), ()


def _numbered(merged: list[str]) -> dict[str, int]:
    alphabet = byte_alphabet()
    tokens = [*alphabet, *(f"{symbol}</w>" for symbol in alphabet), *merged, BOS, EOS]
    return {token: index for index, token in enumerate(tokens)}
