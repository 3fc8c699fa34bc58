"""The published contract documents read well and stand on their own."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumer.contract.documents import asyncapi_document, json_schemas

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
# reST roles and inline literals, which JSON Schema and AsyncAPI readers show raw.
REST_MARKUP = re.compile(r"``|:(func|class|meth|mod|attr|data|exc):`")
GENERATED = ["schemas/request.schema.json", "schemas/event.schema.json"]
GENERATED += ["schemas/started.schema.json", "asyncapi.yaml"]


def _load(name: str) -> Any:
    text = (DOCS / name).read_text(encoding="utf-8")
    return yaml.safe_load(text) if name.endswith(".yaml") else json.loads(text)


def _schemas(document: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object schema with properties, wherever it sits in `document`."""
    stack: list[tuple[str, Any]] = [("", document)]
    while stack:
        where, node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("properties"), dict) and node.get("type") == "object":
                yield where, node
            stack.extend((f"{where}/{key}", value) for key, value in node.items())
        elif isinstance(node, list):
            stack.extend((f"{where}/{i}", value) for i, value in enumerate(node))


@pytest.mark.parametrize("name", GENERATED)
def test_generated_documents_have_no_rest_markup_and_no_outside_links(name: str) -> None:
    text = (DOCS / name).read_text(encoding="utf-8")
    assert not REST_MARKUP.search(text), REST_MARKUP.search(text)
    assert "../shared" not in text
    assert "contract section" not in text


@pytest.mark.parametrize("name", GENERATED)
def test_every_property_has_a_description(name: str) -> None:
    found = 0
    for where, schema in _schemas(_load(name)):
        for prop, spec in schema["properties"].items():
            found += 1
            assert spec.get("description"), f"{name}: {where}/properties/{prop} has no description"
    assert found > 0


def test_the_models_themselves_describe_every_property() -> None:
    # The committed files could be stale; the models are what `make schema` writes.
    documents: list[Any] = [*json_schemas().values(), asyncapi_document()]
    for document in documents:
        for where, schema in _schemas(document):
            missing = [p for p, spec in schema["properties"].items() if not spec.get("description")]
            assert not missing, f"{where}: {missing}"


def test_asyncapi_has_the_started_event_and_the_priority_channel() -> None:
    document = _load("asyncapi.yaml")
    assert document["channels"]["priorityRequests"]["address"] == "SQS_PRIORITY_QUEUE_URL"
    assert set(document["channels"]["completions"]["messages"]) == {"completion", "started"}
    started = document["components"]["schemas"]["StartedEvent"]
    assert started["properties"]["status"]["const"] == "started"
    request = document["components"]["schemas"]["Request"]
    assert request["properties"]["num_images"]["anyOf"][0] == {
        "maximum": 4,
        "minimum": 1,
        "type": "integer",
    }


# The runbook's contract link moves to docs/contract.md with its own rewrite.
def test_no_project_file_points_outside_the_repository() -> None:
    tracked = [p for p in ROOT.rglob("*") if p.suffix in {".md", ".py", ".yaml", ".json", ".toml"}]
    skip = {".venv", ".git", "node_modules", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
    offenders = [
        str(p.relative_to(ROOT))
        for p in tracked
        if p.is_file()
        and not skip.intersection(p.relative_to(ROOT).parts)
        and p != Path(__file__)
        and "../shared" in p.read_text(encoding="utf-8", errors="replace")
    ]
    assert offenders == []
