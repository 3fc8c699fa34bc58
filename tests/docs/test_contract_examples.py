"""Every JSON example of the documents is what the service takes or sends.

Requests go through the service's own parser, and those of the contract
through a worker (builtin:blank) on moto, each to a success event; events go
through the published JSON Schema and the model the worker sends them with.
An example no test knows how to read fails, so a new one cannot go untested.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from consumer.cli.run import load_generator
from consumer.contract.event import CompletionEvent, StartedEvent
from consumer.contract.request import parse_request
from consumer.delivery.options import WorkerOptions
from consumer.service.wiring import serve
from consumer.settings import GenerationDefaults
from tests.support.aws import Stack
from tests.support.docs import DOCUMENTS, ROOT, blocks
from tests.support.helpers import Observer, png, settings

SCHEMAS = ROOT / "docs" / "schemas"
STATUSES = {"succeeded", "failed", "cancelled"}


def _examples() -> list[tuple[str, Any]]:
    return [
        (block.where, json.loads(block.text))
        for document in DOCUMENTS
        for block in blocks(document)
        if block.language == "json"
    ]


EXAMPLES = _examples()


def _kind(example: Any) -> str:
    if isinstance(example, dict) and "Statement" in example:
        return "iam-policy"
    if isinstance(example, dict) and set(example) == {"status"}:
        return "filter-policy"
    if isinstance(example, dict) and example.get("status") in STATUSES:
        return "event"
    if isinstance(example, dict) and example.get("status") == "started":
        return "started"
    if isinstance(example, dict) and {"job_id", "kind"} <= set(example):
        return "request"
    return "unknown"


def _of(kind: str) -> list[tuple[str, Any]]:
    return [(where, example) for where, example in EXAMPLES if _kind(example) == kind]


def _ids(found: list[tuple[str, Any]]) -> list[str]:
    return [where for where, _ in found]


def test_every_json_example_is_one_the_tests_know() -> None:
    unknown = [where for where, example in EXAMPLES if _kind(example) == "unknown"]
    assert unknown == []
    kinds = [_kind(example) for _, example in EXAMPLES]
    assert kinds.count("request") >= 2
    assert kinds.count("event") >= 3


@pytest.mark.parametrize(("where", "example"), _of("request"), ids=_ids(_of("request")))
def test_each_request_example_passes_the_services_own_validation(
    where: str, example: dict[str, Any]
) -> None:
    parse_request(json.dumps(example).encode(), GenerationDefaults())


def _schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    return loaded


@pytest.mark.parametrize(("where", "example"), _of("event"), ids=_ids(_of("event")))
def test_each_event_example_is_a_valid_completion_event(
    where: str, example: dict[str, Any]
) -> None:
    jsonschema.validate(example, _schema("event"))
    event = CompletionEvent.model_validate(example)
    # What the worker would send for it, field for field.
    assert json.loads(event.to_json()) == example


@pytest.mark.parametrize(("where", "example"), _of("started"), ids=_ids(_of("started")))
def test_each_started_example_is_a_valid_started_event(where: str, example: dict[str, Any]) -> None:
    jsonschema.validate(example, _schema("started"))
    StartedEvent.model_validate(example)


@pytest.mark.parametrize(("where", "example"), _of("filter-policy"), ids=_ids(_of("filter-policy")))
def test_each_filter_policy_names_statuses_events_have(where: str, example: dict[str, Any]) -> None:
    statuses = _schema("event")["properties"]["status"]["enum"]
    assert set(example["status"]) <= set(statuses)


@pytest.mark.parametrize(("where", "example"), _of("iam-policy"), ids=_ids(_of("iam-policy")))
def test_each_policy_example_is_a_policy_document(where: str, example: dict[str, Any]) -> None:
    assert example["Version"] == "2012-10-17"
    for statement in example["Statement"]:
        assert statement["Effect"] in ("Allow", "Deny")
        assert {"Action", "Resource"} <= set(statement)


def test_python_examples_compile() -> None:
    for document in DOCUMENTS:
        for block in blocks(document):
            if block.language == "python":
                compile(block.text, block.where, "exec")


def _input_key(request: dict[str, Any]) -> str:
    if "image_key" in request:
        return str(request["image_key"])
    prefix = "avatars/" if request["kind"] == "memory" else "subjects/"
    return f"{prefix}{request['user_id']}.png"


async def test_the_contracts_requests_succeed_through_a_worker(stack: Stack) -> None:
    requests = [example for where, example in _of("request") if where.startswith("docs/contract")]
    assert len(requests) >= 2
    for request in requests:
        stack.put_input(_input_key(request), png(96, 128))
    observer = Observer(stack)
    for request in requests:
        stack.send(request)
    options = WorkerOptions(burst=True, poll_wait_s=1)
    configured = settings(model_path="builtin:blank")
    assert await serve(configured, load_generator, options=options, handle_signals=False) == 0

    events = await observer.wait(len(requests))
    by_job = {event["job_id"]: event for event in events}
    for request in requests:
        event = by_job[request["job_id"]]
        assert event["status"] == "succeeded", event
        jsonschema.validate(event, _schema("event"))
        assert len(event["data"]) == request.get("num_images", 1)
    documented = next(example for _, example in _of("event") if example["status"] == "succeeded")
    # The contract's success example shows every field a success event has.
    assert set(documented) == set(events[0])
