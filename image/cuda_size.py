"""What the CUDA build of torch adds to the image, from PyPI's wheels alone.

The CUDA variant cannot be built without a registry for its base, so its
size is computed: torch's Linux wheel and the CUDA libraries it requires on
Linux (and what those require), each at the version pip would choose. For
each wheel: its download size (the index says) and its installed size (the
sum of its files, read from the zip's central directory with HTTP range
requests, so no wheel is downloaded whole)::

    python3 image/cuda_size.py [TORCH_VERSION] [CPU_WHEEL]

CPU_WHEEL, a local torch CPU wheel (the one this machine's pip installs),
gives the difference to the CPU variant built here.
"""

from __future__ import annotations

import io
import json
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

INDEX = "https://pypi.org/simple"
LINUX = {
    **default_environment(),
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "python_version": "3.11",
    "python_full_version": "3.11.2",
}
MAC = {**LINUX, "sys_platform": "darwin", "platform_system": "Darwin"}
PYTHON_TAGS = {"cp311", "py3", "py311", "py2.py3"}


def _get(url: str, headers: dict[str, str] | None = None) -> bytes:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 (https only)
    with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310
        return bytes(answer.read())


def wheel_for(requirement: Requirement) -> dict[str, object]:
    """The newest Linux x86_64 wheel for CPython 3.11 the requirement allows."""
    name = canonicalize_name(requirement.name)
    accept = {"Accept": "application/vnd.pypi.simple.v1+json"}
    files = json.loads(_get(f"{INDEX}/{name}/", accept))["files"]
    best: tuple[Version, dict[str, object]] | None = None
    for entry in files:
        filename = str(entry["filename"])
        if not filename.endswith(".whl") or entry.get("yanked"):
            continue
        _, version, _, tags = parse_wheel_filename(filename)
        fits = any(
            t.interpreter in PYTHON_TAGS
            and (t.platform == "any" or ("linux" in t.platform and "x86_64" in t.platform))
            for t in tags
        )
        allowed = fits and requirement.specifier.contains(version, prereleases=True)
        if allowed and (best is None or version > best[0]):
            best = (version, entry)
    if best is None:
        raise LookupError(f"no wheel for {requirement}")
    return best[1]


def requirements_of(wheel: dict[str, object], extras: set[str]) -> list[Requirement]:
    """The wheel's requirements on Linux, with `extras` asked for."""
    try:
        metadata = _get(f"{wheel['url']}.metadata").decode()
    except urllib.error.HTTPError:  # no PEP 658 file: read it from the wheel
        with _remote_zip(wheel) as source:
            name = next(n for n in source.namelist() if n.endswith(".dist-info/METADATA"))
            metadata = source.read(name).decode()
    found = []
    for line in metadata.splitlines():
        if line.startswith("Requires-Dist:"):
            requirement = Requirement(line.split(":", 1)[1].strip())
            marker = requirement.marker
            if marker is None or any(marker.evaluate({**LINUX, "extra": e}) for e in extras | {""}):
                found.append(requirement)
    return found


class _Remote(io.RawIOBase):
    """A remote file read by ranges, enough for zipfile's central directory."""

    def __init__(self, url: str, size: int) -> None:
        self.url, self.size, self.at = url, size, 0

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.at

    def seek(self, offset: int, whence: int = 0) -> int:
        self.at = {0: 0, 1: self.at, 2: self.size}[whence] + offset
        return self.at

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        end = min(self.at + len(buffer), self.size) - 1
        if end < self.at:
            return 0
        data = _get(self.url, {"Range": f"bytes={self.at}-{end}"})
        buffer[: len(data)] = data
        self.at += len(data)
        return len(data)


def _remote_zip(wheel: dict[str, object]) -> zipfile.ZipFile:
    remote = _Remote(str(wheel["url"]), int(str(wheel["size"])))
    return zipfile.ZipFile(io.BufferedReader(remote, 1 << 20))


def installed_size(source: zipfile.ZipFile) -> int:
    """The bytes a wheel's files take once unpacked."""
    return sum(info.file_size for info in source.infolist())


def cuda_stack(torch_version: str) -> list[tuple[str, int, int]]:
    """(wheel, download bytes, installed bytes) for torch's Linux wheel and
    every Linux-only requirement below it."""
    torch = wheel_for(Requirement(f"torch=={torch_version}"))
    queue = [r for r in requirements_of(torch, set()) if r.marker and not r.marker.evaluate(MAC)]
    chosen = {"torch": torch}
    while queue:
        requirement = queue.pop()
        name = canonicalize_name(requirement.name)
        if name in chosen:
            continue
        chosen[name] = wheel_for(requirement)
        queue += requirements_of(chosen[name], set(requirement.extras))
    rows = []
    for wheel in chosen.values():
        with _remote_zip(wheel) as source:
            rows.append((str(wheel["filename"]), int(str(wheel["size"])), installed_size(source)))
    return sorted(rows, key=lambda row: -row[2])


def main(argv: list[str]) -> int:
    """Print the table and the totals, in MB."""
    rows = cuda_stack(argv[0] if argv else "2.13.0")
    print(f"{'wheel':<80} {'download MB':>12} {'installed MB':>13}")
    for name, download, installed in rows:
        print(f"{name:<80} {download / 1e6:>12.0f} {installed / 1e6:>13.0f}")
    total = sum(row[2] for row in rows)
    print(f"{'total':<80} {sum(r[1] for r in rows) / 1e6:>12.0f} {total / 1e6:>13.0f}")
    if len(argv) > 1:
        with zipfile.ZipFile(Path(argv[1])) as cpu:
            cpu_size = installed_size(cpu)
        print(f"CPU torch {Path(argv[1]).name}: {cpu_size / 1e6:.0f} MB installed")
        print(f"the CUDA variant's venv is larger by {(total - cpu_size) / 1e6:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
