"""The contract in machine-readable form: JSON Schemas and an AsyncAPI 3.0 document.

Both are generated from the pydantic models, and the committed copies under
``docs/`` are checked against them by a test.
"""

from __future__ import annotations

from typing import Any

import yaml

from consumer.contract.event import CompletionEvent, StartedEvent
from consumer.contract.request import Request
from pipeline.api.limits import LIMITS, Limit

REF_TEMPLATE = "#/components/schemas/{model}"
# The contract's table of limits lies between these lines of docs/contract.md.
LIMITS_BEGIN = "<!-- limits:begin (written by `illustrator schema --write docs`) -->"
LIMITS_END = "<!-- limits:end -->"


def json_schemas() -> dict[str, dict[str, Any]]:
    """The standalone JSON Schemas of the request, the completion and the started event."""
    return {
        "request": Request.model_json_schema(),
        "event": CompletionEvent.model_json_schema(),
        "started": StartedEvent.model_json_schema(),
    }


def _components() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in (Request, CompletionEvent, StartedEvent):
        schema = model.model_json_schema(ref_template=REF_TEMPLATE)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return dict(sorted(schemas.items()))


def _string_header(description: str, enum: list[str] | None = None) -> dict[str, Any]:
    header: dict[str, Any] = {"type": "string", "description": description}
    if enum:
        header["enum"] = enum
    return header


def _event_headers(statuses: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "description": "SNS message attributes, for subscription filters.",
        "required": ["status", "kind"],
        "properties": {
            "status": _string_header("The event's status.", statuses),
            "kind": _string_header(
                "The job's kind, 'unknown' when unreadable.", ["memory", "subject", "unknown"]
            ),
        },
    }


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 description of the request, priority and event channels."""
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "AutoBio illustrator",
            "version": "1.0.0",
            "description": (
                "Generation requests arrive on an SQS queue (and, optionally, a priority "
                "queue whose requests start first); one completion event per finished job "
                "is published to an SNS topic, and, with PUBLISH_STARTED_EVENTS=true, one "
                "started event when a job begins generating. Processing is at-least-once "
                "with exactly-once effect: subscribers deduplicate events by job_id. "
                "Producers send each request with MessageGroupId = user_id (SQS fair "
                "queues), so one user's burst does not hold up the others; a request sent "
                "with another MessageGroupId fails as invalid_request, one without a group "
                "is accepted."
            ),
        },
        "channels": {
            "requests": {
                "address": "SQS_QUEUE_URL",
                "description": "The request queue. Failures end on its dead-letter queue.",
                "messages": {"request": {"$ref": "#/components/messages/Request"}},
                "bindings": {"sqs": {"bindingVersion": "0.2.0"}},
            },
            "priorityRequests": {
                "address": "SQS_PRIORITY_QUEUE_URL",
                "description": (
                    "Optional priority queue: its requests start before any waiting request "
                    "of SQS_QUEUE_URL, waiting at most for the requests a worker already "
                    "holds, as long as it has had at most PRIORITY_SHARE (0.8) of a worker's "
                    "recent receives while both queues have work, so that the request queue "
                    "always moves. Same messages and rules; failures end on its own "
                    "dead-letter queue."
                ),
                "messages": {"request": {"$ref": "#/components/messages/Request"}},
                "bindings": {"sqs": {"bindingVersion": "0.2.0"}},
            },
            "completions": {
                "address": "SNS_TOPIC_ARN",
                "description": (
                    "Job events: completion (succeeded, failed or cancelled) and, when enabled, "
                    "started. "
                    "Filter on the status attribute to take only some."
                ),
                "messages": {
                    "completion": {"$ref": "#/components/messages/CompletionEvent"},
                    "started": {"$ref": "#/components/messages/StartedEvent"},
                },
                "bindings": {"sns": {"bindingVersion": "0.1.0"}},
            },
        },
        "operations": {
            "receiveRequest": {
                "action": "receive",
                "channel": {"$ref": "#/channels/requests"},
                "messages": [{"$ref": "#/channels/requests/messages/request"}],
            },
            "receivePriorityRequest": {
                "action": "receive",
                "channel": {"$ref": "#/channels/priorityRequests"},
                "messages": [{"$ref": "#/channels/priorityRequests/messages/request"}],
            },
            "sendStarted": {
                "action": "send",
                "channel": {"$ref": "#/channels/completions"},
                "messages": [{"$ref": "#/channels/completions/messages/started"}],
            },
            "sendCompletion": {
                "action": "send",
                "channel": {"$ref": "#/channels/completions"},
                "messages": [{"$ref": "#/channels/completions/messages/completion"}],
            },
        },
        "components": {
            "messages": {
                "Request": {
                    "name": "Request",
                    "contentType": "application/json",
                    "summary": "One illustration to draw (UTF-8 JSON, at most 256 KiB).",
                    "headers": {
                        "type": "object",
                        "description": (
                            "SQS message attributes. Send with MessageGroupId = user_id."
                        ),
                        "properties": {
                            "signature": _string_header(
                                "Lowercase hex HMAC-SHA256 of the raw body, keyed with "
                                "AUTH_TOKEN; required when AUTH_ENABLED=true."
                            ),
                        },
                    },
                    "payload": {"$ref": "#/components/schemas/Request"},
                },
                "CompletionEvent": {
                    "name": "CompletionEvent",
                    "contentType": "application/json",
                    "summary": "The outcome of one job.",
                    "headers": _event_headers(["succeeded", "failed", "cancelled"]),
                    "payload": {"$ref": "#/components/schemas/CompletionEvent"},
                },
                "StartedEvent": {
                    "name": "StartedEvent",
                    "contentType": "application/json",
                    "summary": "A job began generating (PUBLISH_STARTED_EVENTS=true).",
                    "headers": _event_headers(["started"]),
                    "payload": {"$ref": "#/components/schemas/StartedEvent"},
                },
            },
            "schemas": _components(),
        },
    }


def asyncapi_yaml() -> str:
    """The AsyncAPI document as the YAML committed in ``docs/asyncapi.yaml``."""
    return yaml.safe_dump(asyncapi_document(), sort_keys=False, allow_unicode=True, width=100)


def _limit_row(limit: Limit) -> str:
    names = limit.name.split(", ") if limit.applies == "request" else [limit.name]
    name = ", ".join(f"`{n}`" if limit.applies == "request" else n for n in names)
    setting = f"`{limit.setting}`" if limit.setting else ""
    step = f", multiples of {limit.multiple_of}" if limit.multiple_of else ""
    return f"| {name} | {limit.range_text()}{step} | {limit.unit} | {setting} | {limit.rule} |"


def limits_markdown() -> str:
    """The contract's table of every limit, as written in ``docs/contract.md``."""
    rows = [
        LIMITS_BEGIN,
        "| what | allowed | unit | setting (default shown) | rule |",
        "|---|---|---|---|---|",
        *(_limit_row(limit) for limit in LIMITS),
        LIMITS_END,
    ]
    return "\n".join(rows)


def with_limits(text: str) -> str:
    """`text` (the contract) with its table of limits rewritten."""
    start, end = text.index(LIMITS_BEGIN), text.index(LIMITS_END) + len(LIMITS_END)
    return text[:start] + limits_markdown() + text[end:]
