"""The unit layer: tests that need neither moto nor torch.

Its last test checks that nothing the layer ran loaded either; it is moved
to the end of the session here, whatever order the tests were collected in.
"""

from __future__ import annotations

import pytest

LAST = "test_the_unit_layer_loads_neither_moto_nor_torch"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the layer's own check after every other test."""
    last = [item for item in items if item.name == LAST]
    items[:] = [item for item in items if item.name != LAST] + last
