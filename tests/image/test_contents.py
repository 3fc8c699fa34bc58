"""What the image holds: what running needs, compiling included, and nothing
of how it was built (no tests, no virtual environment of a checkout, no pip,
its configuration or cache, no build stage leftovers)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.image.conftest import IMAGE
from tests.support.containers import Engine

# Run inside the image by its own Python: the facts the tests judge.
SURVEY = r"""
import json, os, shutil, site, sys, sysconfig
home = os.path.expanduser("~")
site_packages = sysconfig.get_paths()["purelib"]
def found(paths):
    return sorted(p for p in paths if os.path.lexists(p))
def walk(top, pick):
    out = []
    for folder, dirs, files in os.walk(top):
        if folder.startswith(("/proc", "/sys", "/dev")):
            dirs[:] = []
            continue
        out += [os.path.join(folder, n) for n in dirs + files if pick(n)]
    return sorted(out)
ours = [os.path.join(site_packages, p) for p in ("consumer", "pipeline")]
print(json.dumps({
    "python": sys.version.split()[0],
    "release": sys.version_info.releaselevel,
    "prefix": sys.prefix,
    "compilers": {n: shutil.which(n) for n in ("cc", "gcc", "g++")},
    "python_h": os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")),
    "tools": {n: shutil.which(n) for n in (
        "pip", "pip3", "make", "cmake", "ninja", "git", "curl", "wget", "cargo")},
    "pip_importable": __import__("importlib.util").util.find_spec("pip") is not None,
    "pip_config": found([
        "/etc/pip.conf", "/etc/xdg/pip", os.path.join(sys.prefix, "pip.conf"),
        os.path.join(home, ".pip"), os.path.join(home, ".config/pip"),
        "/root/.pip", "/root/.config/pip",
    ]),
    "caches": found([
        os.path.join(home, ".cache"), "/root/.cache", "/src", "/tmp/project",
        "/tmp/requirements.txt",
    ]),
    "leftovers": {
        "/mnt": sorted(os.listdir("/mnt")),
        "/opt": sorted(os.listdir("/opt")),
        "/tmp": sorted(os.listdir("/tmp")),
        "/var/lib/apt/lists": sorted(os.listdir("/var/lib/apt/lists")),
        "debs": walk("/var/cache/apt", lambda n: n.endswith(".deb")),
    },
    "virtualenvs": walk("/", lambda n: n == ".venv"),
    "wheels": walk("/", lambda n: n.endswith(".whl")),
    "pip_configs": walk("/", lambda n: n == "pip.conf"),
    "test_files": [p for top in ours for p in walk(top, lambda n: n.startswith("test_"))]
        + found([os.path.join(site_packages, "tests"), os.path.join(site_packages, "conftest.py")]),
    "cache_volume": os.environ.get("TORCHINDUCTOR_CACHE_DIR", ""),
    "triton_cache": os.environ.get("TRITON_CACHE_DIR", ""),
}))
"""


@pytest.fixture(scope="module")
def survey(engine: Engine) -> dict[str, Any]:
    done = engine("run", "--rm", "--network", "none", "--entrypoint", "python", IMAGE, "-c", SURVEY)
    facts: dict[str, Any] = json.loads(done.stdout)
    return facts


def test_compiling_has_its_compiler_and_headers(survey: dict[str, Any]) -> None:
    # A released Python: Ubuntu 22.04's 3.11.0rc1 cannot import torch.
    assert survey["release"] == "final", survey["python"]
    assert all(survey["compilers"].values()), survey["compilers"]
    assert survey["python_h"] is True
    # Compiled kernels survive a restart: they are written to the cache volume.
    assert survey["cache_volume"] == "/var/cache/illustrator/torchinductor"
    assert survey["triton_cache"] == "/var/cache/illustrator/triton"


def test_no_build_tools_pip_or_its_configuration(survey: dict[str, Any]) -> None:
    assert {k: v for k, v in survey["tools"].items() if v} == {}
    assert survey["pip_importable"] is False
    assert survey["pip_config"] == []
    assert survey["pip_configs"] == []


def test_no_tests_checkout_or_build_leftovers(survey: dict[str, Any]) -> None:
    assert survey["prefix"] == "/opt/venv"
    assert survey["test_files"] == []
    assert survey["virtualenvs"] == []
    assert survey["wheels"] == []
    assert survey["caches"] == []
    assert survey["leftovers"] == {
        "/mnt": [],
        "/opt": ["venv"],
        "/tmp": [],
        "/var/lib/apt/lists": [],
        "debs": [],
    }
