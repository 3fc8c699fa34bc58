"""CLIP's real BPE vocabulary, read from the file ``open_clip_torch`` ships.

``builtin:tiny`` uses it so that its prompts are as many tokens long as the
real model's (a 2000-character story is some 420 tokens, not 2000 letters),
and tests see what long prompts do. The vocabulary is derived from
``bpe_simple_vocab_16e6.txt.gz`` the way OpenAI's CLIP tokenizer derives it:
the 256 byte symbols, the same with the word-end mark, the first 48,894
merges' results, then the start and end tokens: 49,408 tokens, numbered as
in the real model.

The package is only a file source here: it is located without being
imported (importing it would need torchvision). Without the file there is
no ``builtin:tiny``: a model that quietly fell back to another tokenizer
would draw other pictures from the same request.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path

from pipeline.api.errors import ModelLoadError

BPE_PACKAGE = "open_clip"
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
        "package; install it with `pip install --no-deps open_clip_torch`"
    )


@functools.cache
def clip_bpe() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """(vocabulary, merges) of CLIP's tokenizer, read once per process."""
    with gzip.open(bpe_file(), "rt", encoding="utf-8") as file:
        lines = file.read().split("\n")[1 : MERGES + 1]
    merges = tuple((left, right) for left, right in (line.split() for line in lines))
    alphabet = byte_alphabet()
    tokens = [*alphabet, *(f"{symbol}</w>" for symbol in alphabet)]
    tokens += [left + right for left, right in merges]
    tokens += [BOS, EOS]
    return {token: index for index, token in enumerate(tokens)}, merges
