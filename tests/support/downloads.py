"""The model download under test: trouble in one of its parts, the files it left."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from consumer.aws.s3_download import Download


@contextmanager
def on_part(index: int, action: Callable[[int], None], *, after: bool = False) -> Iterator[None]:
    """Call `action` with the partial file's descriptor before (or `after`)
    part `index` of every download is fetched, while the block runs.

    An action that raises before the part stops it as a killed process would.
    """
    real = Download._fetch_range

    async def fetch(self: Download, fd: int, part: int, *args: Any) -> None:
        if part == index and not after:
            action(fd)
        await real(self, fd, part, *args)
        if part == index and after:
            action(fd)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Download, "_fetch_range", fetch)
        yield


def files_under(folder: Path) -> list[str]:
    """The files below `folder`, as sorted relative POSIX paths."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
