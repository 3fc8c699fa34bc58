"""The package sources of this machine's pip, lent to the image build for its
duration only.

A build's pip must install what the host's pip would: the same indexes, local
wheel folders, constraints and certificate authority (a machine behind a
TLS-inspecting proxy, or one with a local mirror, needs them). Nothing of it
may end up in the image, so the build does not copy it: this writes a pip
configuration into a build-only folder and prints the engine's ``--volume``
options that mount it, and every local folder it names, read-only for the
build's RUN steps::

    python3 image/pip_sources.py build/image/pip    # one option a line

The configuration is the host's effective one for ``pip install`` (the global
section, overridden by the install section, overridden by ``PIP_*``
variables), as ``pip config list`` reports it. Everything lands below /mnt,
which every base has, empty: the build leaves no mount point behind (a
volume creates its target in the image when the target is missing). Files
(the certificate bundle, constraints) are copied into the folder; local
folders are mounted inside it, and the settings rewritten to match.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

# Where the build sees the folder (the Dockerfile's PIP_CONFIG_FILE lies in it).
MOUNT = "/mnt"
# Settings that name where packages come from, and the few that shape how
# they are fetched; the rest (cache, user, verbosity) stays the host's affair.
PASSED = {
    "index-url",
    "extra-index-url",
    "find-links",
    "constraint",
    "cert",
    "trusted-host",
    "default-timeout",
    "retries",
    "proxy",
}
LINE = re.compile(r"^(?P<section>[^.]+)\.(?P<key>[^=]+)='(?P<value>.*)'$")
PRECEDENCE = {"global": 0, "install": 1, ":env:": 2}


def effective(listing: str) -> dict[str, str]:
    """The settings `pip install` uses, from ``pip config list``'s output."""
    found: dict[str, tuple[int, str]] = {}
    for line in listing.splitlines():
        match = LINE.match(line.strip())
        if match is None or match["key"] not in PASSED:
            continue
        rank = PRECEDENCE.get(match["section"])
        if rank is not None and rank >= found.get(match["key"], (-1, ""))[0]:
            found[match["key"]] = (rank, match["value"])
    return {key: value for key, (_, value) in found.items()}


class Lender:
    """Builds the folder the build mounts: copies of files, mount points of
    folders, and the options that mount them."""

    def __init__(self, folder: Path) -> None:
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        self.folder = folder.resolve()
        self.options = [f"--volume={self.folder}:{MOUNT}:ro"]
        self._lent: dict[Path, str] = {}

    def lend(self, location: str, *, index: bool) -> str:
        """`location` as the build sees it: a local file or folder (a path or a
        ``file:`` URL) is lent, anything else kept as it is."""
        url = location.startswith("file:")
        path = Path(urlparse(location).path) if url else Path(location)
        if (not url and "://" in location) or not path.exists():
            return location
        # An index's pages link to their files relatively (../../files/...):
        # the folder above the index holds both.
        lent = path.parent if index else path
        if lent not in self._lent:
            self._lent[lent] = self._place(lent)
        inside = self._lent[lent] + ("/" + path.name if index else "")
        return "file://" + inside if url else inside

    def _place(self, path: Path) -> str:
        name = f"{len(self._lent)}-{path.name}"
        if path.is_file():
            shutil.copyfile(path, self.folder / name)
        else:
            (self.folder / name).mkdir()
            self.options.append(f"--volume={path}:{MOUNT}/{name}:ro")
        return f"{MOUNT}/{name}"


def configure(settings: dict[str, str], folder: Path) -> list[str]:
    """Write ``pip.conf`` and what it names into `folder`; the engine options
    that mount them for the build."""
    lender = Lender(folder)
    lines = ["[global]"]
    for key, value in sorted(settings.items()):
        if key in {"index-url", "extra-index-url", "find-links", "constraint", "cert"}:
            index = key.endswith("index-url")
            value = " ".join(lender.lend(item, index=index) for item in value.split())
        lines.append(f"{key} = {value}")
    (lender.folder / "pip.conf").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lender.options


def main(argv: list[str]) -> int:
    """Print the mount options, one a line, for the folder named in `argv`."""
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    for option in configure(effective(listing), Path(argv[0])):
        print(option)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
