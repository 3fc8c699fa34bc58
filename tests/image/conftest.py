"""The built image, run as a user runs it: `make test-image`.

These tests need a container engine and the image `make image` built; they
run only when ``ILLUSTRATOR_IMAGE`` names it (``make test-image`` sets it),
and as root, as on the instance, which owns the cache for uid 10001.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.aws import FAKE_CREDENTIALS
from tests.support.containers import Engine, engine_from_environment
from tests.support.instance import Instance, is_root

IMAGE = os.environ.get("ILLUSTRATOR_IMAGE", "")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip this folder's tests unless an image is named."""
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason="the built image: ILLUSTRATOR_IMAGE=... (make test-image)")
    for item in items:
        if not IMAGE and here in item.path.parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def engine() -> Engine:
    """The engine that built the image, with the image present."""
    assert is_root(), "the image tests run as root (the instance chowns the cache for uid 10001)"
    chosen = engine_from_environment()
    assert chosen("image", "inspect", IMAGE, check=False).returncode == 0, (
        f"{IMAGE} is not built: run `make image`"
    )
    return chosen


def _instance(engine: Engine, root: Path) -> Iterator[Instance]:
    made = Instance(root, engine, IMAGE)
    yield made
    made.worker().remove()


@pytest.fixture(scope="module")
def instance(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    """An instance root for a module; its worker is removed afterwards."""
    yield from _instance(engine, tmp_path_factory.mktemp("instance"))


@pytest.fixture
def fresh_instance(engine: Engine, tmp_path: Path) -> Iterator[Instance]:
    """An instance root for one test; its worker is removed afterwards."""
    yield from _instance(engine, tmp_path)


@pytest.fixture(scope="module", autouse=True)
def _placeholder_credentials() -> Iterator[None]:
    """moto's placeholder credentials for the module-scoped set-ups too (the
    suite's own isolation sets them per test only)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in FAKE_CREDENTIALS.items():
            patch.setenv(name, value)
        yield
