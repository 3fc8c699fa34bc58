"""pydantic's validation errors as one line a sender or an operator can act on."""

from __future__ import annotations

from pydantic import ValidationError


def describe(error: ValidationError, root: str, limit: int) -> str:
    """The first `limit` errors as ``where: what``, joined with ``;``, and how
    many more there were; `root` names the document itself (an error with no
    location)."""
    parts = []
    for item in error.errors()[:limit]:
        where = ".".join(str(p) for p in item["loc"]) or root
        parts.append(f"{where}: {str(item['msg']).removeprefix('Value error, ')}")
    more = error.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
