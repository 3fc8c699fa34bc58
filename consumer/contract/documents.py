"""The contract in machine-readable form: JSON Schemas and an AsyncAPI 3.0 document.

Both are generated from the pydantic models, and the committed copies under
``docs/`` are checked against them by a test.
"""

from __future__ import annotations

from typing import Any

import yaml

from consumer.contract.event import CompletionEvent
from consumer.contract.request import Request

REF_TEMPLATE = "#/components/schemas/{model}"


def json_schemas() -> dict[str, dict[str, Any]]:
    """The standalone JSON Schemas of the request and the completion event."""
    return {
        "request": Request.model_json_schema(),
        "event": CompletionEvent.model_json_schema(),
    }


def _components() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in (Request, CompletionEvent):
        schema = model.model_json_schema(ref_template=REF_TEMPLATE)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return dict(sorted(schemas.items()))


def _string_header(description: str, enum: list[str] | None = None) -> dict[str, Any]:
    header: dict[str, Any] = {"type": "string", "description": description}
    if enum:
        header["enum"] = enum
    return header


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 description of the request and completion channels."""
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "AutoBio illustrator",
            "version": "1.0.0",
            "description": (
                "Generation requests arrive on an SQS queue; one completion event per "
                "finished job is published to an SNS topic. Processing is at-least-once "
                "with exactly-once effect: subscribers deduplicate events by job_id."
            ),
        },
        "channels": {
            "requests": {
                "address": "SQS_QUEUE_URL",
                "description": "The request queue. Failures end on its dead-letter queue.",
                "messages": {"request": {"$ref": "#/components/messages/Request"}},
                "bindings": {"sqs": {"bindingVersion": "0.2.0"}},
            },
            "completions": {
                "address": "SNS_TOPIC_ARN",
                "description": "Completion events, succeeded or failed.",
                "messages": {"completion": {"$ref": "#/components/messages/CompletionEvent"}},
                "bindings": {"sns": {"bindingVersion": "0.1.0"}},
            },
        },
        "operations": {
            "receiveRequest": {
                "action": "receive",
                "channel": {"$ref": "#/channels/requests"},
                "messages": [{"$ref": "#/channels/requests/messages/request"}],
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
                        "description": "SQS message attributes.",
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
                    "headers": {
                        "type": "object",
                        "description": "SNS message attributes, for subscription filters.",
                        "required": ["status", "kind"],
                        "properties": {
                            "status": _string_header("The job's status.", ["succeeded", "failed"]),
                            "kind": _string_header(
                                "The job's kind, 'unknown' when unreadable.",
                                ["memory", "subject", "unknown"],
                            ),
                        },
                    },
                    "payload": {"$ref": "#/components/schemas/CompletionEvent"},
                },
            },
            "schemas": _components(),
        },
    }


def asyncapi_yaml() -> str:
    """The AsyncAPI document as the YAML committed in ``docs/asyncapi.yaml``."""
    return yaml.safe_dump(asyncapi_document(), sort_keys=False, allow_unicode=True, width=100)
