"""The project's documents as the tests read them: fenced blocks, shell
commands (continuations joined), `illustrator` command lines expanded from
their usage notation, and heading anchors."""

from __future__ import annotations

import itertools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = ("README.md", "docs/contract.md", "docs/operations.md", "docs/architecture.md")
_FENCE = re.compile(r"^(?P<indent> *)```(?P<language>[a-z]*)\s*$")
_HEADING = re.compile(r"^#{1,6} (?P<title>.+?)\s*$")
_INLINE = re.compile(r"`([^`\n]+)`")
# Usage notation: an optional part, and the placeholders that stand for values.
_OPTIONAL = re.compile(r"\[([^\[\]]+)\]")
PLACEHOLDERS = {
    "N": "5",
    "S": "5",
    "URL": "http://127.0.0.1:8080/health",
    "JOB_ID": "job-1",
    "USER_ID": "user-1",
    "FILE": "picture.png",
    "PATH": "sandbox.env",
    "KEY": "avatars/user-1.png",
    "TEXT": "text",
    "X": "0.5",
    "ID": "id-1",
}


@dataclass(frozen=True, slots=True)
class Block:
    """One fenced block: where it starts, its language and its text (unindented)."""

    document: str
    line: int
    language: str
    text: str

    @property
    def where(self) -> str:
        """``docs/contract.md:123`` for messages."""
        return f"{self.document}:{self.line}"


def read(document: str) -> str:
    """A document's text."""
    return (ROOT / document).read_text(encoding="utf-8")


def blocks(document: str) -> list[Block]:
    """Every fenced block of `document`, in order."""
    found: list[Block] = []
    lines = read(document).splitlines()
    opened: tuple[int, str, int] | None = None
    body: list[str] = []
    for number, line in enumerate(lines, start=1):
        fence = _FENCE.match(line)
        if opened is None and fence:
            opened, body = (number, fence["language"], len(fence["indent"])), []
        elif opened is not None and line.strip() == "```":
            start, language, indent = opened
            text = "\n".join(b[indent:] if b[:indent].isspace() else b for b in body)
            found.append(Block(document, start, language, text + "\n"))
            opened = None
        elif opened is not None:
            body.append(line)
    return found


def shell_lines(block: Block) -> list[str]:
    """The block's commands, continuation lines joined, blank lines dropped."""
    joined = block.text.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip()]


def words(line: str) -> list[str]:
    """A shell line's words up to the first pipe or list operator, comments dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    result: list[str] = []
    for word in lexer:
        if word in ("|", "||", "&&", ";", "&"):
            break
        result.append(word)
    return result


def illustrator_argv(tokens: list[str]) -> list[str] | None:
    """The arguments after ``illustrator`` (or ``.venv/bin/illustrator``,
    after any ``NAME=value`` prefixes), or ``None`` when the line runs
    something else."""
    rest = list(itertools.dropwhile(lambda t: re.fullmatch(r"[A-Z_]+=.*", t), tokens))
    if rest and rest[0] in ("illustrator", ".venv/bin/illustrator"):
        return rest[1:]
    return None


def expansions(argv: list[str]) -> list[list[str]]:
    """Concrete command lines for a usage line: ``[--max N]`` taken, ``list|redrive``
    split into one line each, placeholders given values."""
    line = _OPTIONAL.sub(lambda m: m.group(1), shlex.join(argv))
    choices = [word.split("|") for word in shlex.split(line)]
    return [
        [PLACEHOLDERS.get(word, word) for word in combination]
        for combination in itertools.product(*choices)
    ]


def inline_commands(document: str) -> list[tuple[int, list[str]]]:
    """`illustrator ...` spans of running text (fragments too), with their line."""
    found = []
    for number, line in enumerate(read(document).splitlines(), start=1):
        for span in _INLINE.findall(line):
            tokens = span.split()
            argv = illustrator_argv(tokens) if tokens else None
            if argv is not None:
                found.append((number, argv))
    return found


def slug(title: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = title.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(document: str) -> set[str]:
    """The anchors of every heading outside fenced blocks."""
    inside, found = False, set()
    for line in read(document).splitlines():
        if _FENCE.match(line) or line.strip() == "```":
            inside = not inside
            continue
        heading = _HEADING.match(line)
        if heading and not inside:
            found.add(slug(heading["title"]))
    return found


def links(document: str) -> list[tuple[int, str]]:
    """The in-page links (``](#anchor)``) of `document`, with their line."""
    return [
        (number, anchor)
        for number, line in enumerate(read(document).splitlines(), start=1)
        for anchor in re.findall(r"\]\(#([^)]+)\)", line)
    ]
