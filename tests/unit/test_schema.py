"""The machine-readable contract stays in sync with the models."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from consumer.cli.schema import write_documents
from consumer.contract.documents import asyncapi_document, json_schemas

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_committed_documents_match_the_models(tmp_path: Path) -> None:
    for fresh in write_documents(tmp_path):
        committed = DOCS / fresh.relative_to(tmp_path)
        assert committed.exists(), f"{committed} is missing: run `make schema`"
        assert committed.read_text() == fresh.read_text(), (
            f"{committed} is out of date: run `make schema`"
        )


def test_request_schema_states_the_rules() -> None:
    schema = json_schemas()["request"]
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"job_id", "kind", "user_id"}
    props = schema["properties"]
    assert props["job_id"]["pattern"] == "^[A-Za-z0-9_-]{1,128}$"
    steps = props["num_inference_steps"]["anyOf"][0]
    assert (steps["minimum"], steps["maximum"]) == (1, 150)
    width = props["width"]["anyOf"][0]
    assert (width["minimum"], width["maximum"], width["multipleOf"]) == (64, 2048, 64)


def test_asyncapi_references_resolve() -> None:
    document = asyncapi_document()
    assert document["asyncapi"] == "3.0.0"

    def resolve(ref: str) -> object:
        node: object = document
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(node, dict), ref
            assert part in node, ref
            node = node[part]
        return node

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                resolve(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    headers = document["components"]["messages"]["CompletionEvent"]["headers"]
    assert set(headers["properties"]) == {"status", "kind"}


def test_asyncapi_yaml_parses_to_the_document() -> None:
    committed = yaml.safe_load((DOCS / "asyncapi.yaml").read_text())
    assert committed == json.loads(json.dumps(asyncapi_document()))
