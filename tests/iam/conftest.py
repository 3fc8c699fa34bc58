"""The stack deployed once for the whole IAM layer (about ten seconds)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.iam.stack import IamServer, IamStack


@pytest.fixture(scope="session")
def iam_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IamStack]:
    """infra/illustrator.yaml in a moto server that enforces IAM."""
    folder = tmp_path_factory.mktemp("iam")
    server = IamServer(folder / "decisions.jsonl")
    try:
        yield IamStack(server)
    finally:
        server.stop()
