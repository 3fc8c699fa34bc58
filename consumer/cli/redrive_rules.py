"""Which dead-lettered requests a redrive moves, by their ``error_code``.

A request that failed for a reason of its own (a bad body, a bad picture, a
request too large for the GPU, one that kept killing its workers, a picture
the safety checker kept flagging) fails the same way when it is sent again
unchanged: by default a redrive leaves those in the DLQ and says how many it
left, by code. Every other code (``input_not_found``, ``unauthorized``,
``generation_failed``, ``internal_error``) and a request without a code (SQS
moved it after its RedrivePolicy's ``maxReceiveCount``) is moved.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from consumer.errors import ErrorCode

NO_CODE = "none"
"""How a request without an ``error_code`` attribute is named in rules and reports."""

UNCHANGEABLE = frozenset(
    {
        ErrorCode.INVALID_REQUEST,
        ErrorCode.INVALID_INPUT,
        ErrorCode.TOO_LARGE,
        ErrorCode.CRASHED_WORKER,
        ErrorCode.CONTENT_FILTERED,
    }
)
"""The codes of requests that cannot succeed unchanged: left in the DLQ by default."""

CODES = (*(code.value for code in ErrorCode), NO_CODE)
"""What ``--code`` and ``--except-code`` accept."""


@dataclass(frozen=True, slots=True)
class CodeRule:
    """Moves the requests whose code is in `only` (all when ``None``), except `never`."""

    only: frozenset[str] | None = None
    never: frozenset[str] = frozenset()
    default: bool = False

    @classmethod
    def everything(cls) -> CodeRule:
        """Move every request (``--all``)."""
        return cls()

    @classmethod
    def standard(cls) -> CodeRule:
        """Leave the codes that cannot succeed unchanged (the default)."""
        return cls(never=frozenset(code.value for code in UNCHANGEABLE), default=True)

    @classmethod
    def from_options(
        cls, *, everything: bool, codes: Iterable[str] | None, except_codes: Iterable[str] | None
    ) -> CodeRule:
        """The rule the command line asks for; the standard one when it asks for none."""
        if everything:
            return cls.everything()
        if codes:
            return cls(only=frozenset(codes))
        if except_codes:
            return cls(never=frozenset(except_codes))
        return cls.standard()

    @property
    def moves_all(self) -> bool:
        """Whether every request is moved (so SQS's move task may do it)."""
        return self.only is None and not self.never

    def moves(self, code: str | None) -> bool:
        """Whether a request dead-lettered with `code` (``None``: none) is moved."""
        name = code or NO_CODE
        if self.only is not None and name not in self.only:
            return False
        return name not in self.never


def left_summary(left: Mapping[str, int]) -> str:
    """``"invalid_input 3, too_large 1"``: counts by code, largest first."""
    ordered = sorted(left.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{code} {count}" for code, count in ordered)
