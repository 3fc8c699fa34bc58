"""Counting a prompt's tokens without a tokenizer: a lower bound.

CLIP's tokenizer first splits a text into pieces (words, single digits,
runs of other symbols, English contractions) and then encodes each piece
as one token or more, never fewer. So the number of pieces is a lower bound
of CLIP's count: a generator without a tokenizer (``builtin:blank``) counts
them, and so never refuses a prompt the real model would take. The split
follows CLIP's own pattern, with Python's ``re`` classes standing in for
the Unicode properties (``\\p{L}``, ``\\p{N}``) it names.
"""

from __future__ import annotations

import re

# CLIP's pre-tokenizer: contractions, letters, single digits, other symbols.
_PIECES = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|(?:[^\s\w]|_)+", re.IGNORECASE)


def word_pieces(text: str) -> int:
    """The pieces CLIP's tokenizer splits `text` into: at most its token count."""
    return sum(1 for _ in _PIECES.finditer(" ".join(text.lower().split())))


def spec_word_pieces(prompt: str, style_prompt: str, negative_prompt: str) -> int:
    """The lower bound of the longest prompt a model encodes: the prompt with
    its style prompt, or the negative prompt (``""`` without guidance)."""
    return max(word_pieces(f"{style_prompt}, {prompt}"), word_pieces(negative_prompt))
