"""Copy infra/*.sh into the template's user data, or check that the copies match.

The template holds each script in a YAML literal block introduced by
``- | # file: infra/<name>.sh``; this rewrites the block's body from the file.
Run it after editing a script::

    python infra/embed_scripts.py          # rewrite infra/illustrator.yaml
    python infra/embed_scripts.py --check  # exit 1 when a copy differs
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "infra" / "illustrator.yaml"
MARKER = re.compile(r"^(?P<indent> *)- \| # file: (?P<path>\S+)$")
# The block body is indented two spaces more than its list item's dash.
BODY_INDENT = 2


def embed(template: str, root: Path = ROOT) -> str:
    """The template text with every marked block replaced by its file's text."""
    lines = template.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        match = MARKER.match(line)
        if match is None:
            continue
        body_indent = " " * (len(match["indent"]) + BODY_INDENT)
        # Skip the old body: blank lines and lines indented as the body.
        while i < len(lines) and (lines[i].startswith(body_indent) or lines[i].strip() == ""):
            if lines[i].strip() == "" and not _more_body(lines, i, body_indent):
                break
            i += 1
        script = (root / match["path"]).read_text(encoding="utf-8")
        out.extend(body_indent + s if s else "" for s in script.rstrip("\n").split("\n"))
    return "\n".join(out)


def _more_body(lines: list[str], i: int, indent: str) -> bool:
    """Whether the blank line at `i` sits inside the block (body text follows)."""
    for line in lines[i:]:
        if line.strip():
            return line.startswith(indent)
    return False


def main(argv: list[str]) -> int:
    """Rewrite the template, or with --check report whether it is in sync."""
    current = TEMPLATE.read_text(encoding="utf-8")
    wanted = embed(current)
    if "--check" in argv:
        if wanted != current:
            print("infra/illustrator.yaml: user data differs from infra/*.sh")
            print("run: python infra/embed_scripts.py")
            return 1
        return 0
    TEMPLATE.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
