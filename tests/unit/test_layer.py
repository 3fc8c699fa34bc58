"""The unit layer stays quick: nothing it imports or runs loads moto or torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("moto", "torch", "diffusers", "transformers")
UNIT = Path(__file__).parent


def _loaded(modules: list[str]) -> list[str]:
    return [name for name in HEAVY if any(m == name or m.startswith(name + ".") for m in modules)]


def _unit_only(session: pytest.Session) -> bool:
    return all(Path(str(item.path)).is_relative_to(UNIT) for item in session.items)


def test_the_unit_layer_loads_neither_moto_nor_torch(request: pytest.FixtureRequest) -> None:
    if _unit_only(request.session):
        # Run last (see conftest.py): what every unit test ran is loaded by now.
        assert _loaded(list(sys.modules)) == []
        return
    # Among other suites moto is loaded anyway: import the layer's modules
    # in a fresh interpreter instead.
    names = [f"tests.unit.{path.stem}" for path in sorted(UNIT.glob("*.py"))]
    script = (
        "import importlib, sys\n"
        f"for name in {names!r}: importlib.import_module(name)\n"
        "print('\\n'.join(sys.modules))\n"
    )
    root = UNIT.parent.parent
    found = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True
    )
    assert _loaded(found.stdout.split()) == []
