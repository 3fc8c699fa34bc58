"""image/pip_sources.py: the host's pip sources, lent to the image build."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pip_sources", ROOT / "image" / "pip_sources.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pip_sources = _module()

LISTING = """\
:env:.find-links='/env/wheels'
:env:.index-url='https://env.example/simple'
:env:.disable-pip-version-check='1'
global.cert='/etc/ssl/certs/ca-certificates.crt'
global.find-links='/global/wheels'
global.index-url='https://pypi.example/simple'
global.trusted-host='global.example'
install.index-url='https://install.example/simple'
install.trusted-host='install.example'
freeze.trusted-host='freeze.example'
global.cache-dir='/root/.cache/pip'
"""


def test_the_effective_settings_of_pip_install() -> None:
    assert pip_sources.effective(LISTING) == {
        # PIP_* variables over the install section over the global one;
        # other commands' sections and settings of no bearing are left out.
        "find-links": "/env/wheels",
        "index-url": "https://env.example/simple",
        "trusted-host": "install.example",
        "cert": "/etc/ssl/certs/ca-certificates.crt",
    }


def test_local_sources_are_lent_below_mnt_and_the_rest_kept(tmp_path: Path) -> None:
    host = tmp_path / "host"
    (host / "wheels").mkdir(parents=True)
    (host / "mirror" / "simple").mkdir(parents=True)
    (host / "ca.pem").write_text("CERTIFICATE")
    (host / "caps.txt").write_text("torch<=3\n")
    settings = {
        "find-links": f"{host / 'wheels'} https://wheels.example/",
        "extra-index-url": f"file://{host / 'mirror' / 'simple'} https://more.example/simple",
        "cert": str(host / "ca.pem"),
        "constraint": str(host / "caps.txt"),
        "default-timeout": "180",
    }
    folder = tmp_path / "lent"
    options = pip_sources.configure(settings, folder)

    conf = dict(line.split(" = ", 1) for line in (folder / "pip.conf").read_text().splitlines()[1:])
    assert conf["cert"].startswith("/mnt/")
    assert (folder / conf["cert"].removeprefix("/mnt/")).read_text() == "CERTIFICATE"
    assert (folder / conf["constraint"].removeprefix("/mnt/")).read_text() == "torch<=3\n"
    wheels, remote = conf["find-links"].split()
    mirror, more = conf["extra-index-url"].split()
    assert remote == "https://wheels.example/"
    assert more == "https://more.example/simple"
    # An index is lent with the folder above it, where its pages' links lead.
    assert mirror.startswith("file:///mnt/")
    assert mirror.endswith("-mirror/simple")
    assert conf["default-timeout"] == "180"
    assert options == [
        f"--volume={folder.resolve()}:/mnt:ro",
        f"--volume={host / 'mirror'}:{mirror.removeprefix('file://').removesuffix('/simple')}:ro",
        f"--volume={host / 'wheels'}:{wheels}:ro",
    ]
    # Each folder has its mount point inside the lent folder, none in the image.
    assert (folder / wheels.removeprefix("/mnt/")).is_dir()


def test_nothing_is_lent_without_a_configuration(tmp_path: Path) -> None:
    options = pip_sources.configure({}, tmp_path / "lent")
    assert options == [f"--volume={(tmp_path / 'lent').resolve()}:/mnt:ro"]
    assert (tmp_path / "lent" / "pip.conf").read_text() == "[global]\n"
