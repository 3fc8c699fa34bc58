"""The one classifier: every kind of failure to a severity, a code and a log level."""

from __future__ import annotations

import logging
from typing import Any, cast

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from consumer.classify import classify
from consumer.errors import (
    ConfigError,
    CrashedWorker,
    ErrorCode,
    GenerationFailed,
    GenerationTimedOut,
    InputNotFound,
    InvalidRequest,
    Severity,
    TransientError,
    Unauthorized,
)
from pipeline.api.errors import (
    ContentFilteredError,
    GenerationOOMError,
    InvalidImageError,
    ModelLoadError,
    PipelineBrokenError,
    PipelineError,
    RequestTooLargeError,
)

P, T, F = Severity.PERMANENT, Severity.TRANSIENT, Severity.FATAL
E = ErrorCode


def _client_error(code: str, operation: str = "PutObject") -> ClientError:
    error = {"Code": code, "Message": "User: arn:aws:iam::123456789012:role/x is not authorized"}
    return ClientError(cast(Any, {"Error": error}), operation)


@pytest.mark.parametrize(
    ("error", "severity", "code"),
    [
        (InvalidRequest("bad"), P, E.INVALID_REQUEST),
        (Unauthorized("no"), P, E.UNAUTHORIZED),
        (InputNotFound("none"), P, E.INPUT_NOT_FOUND),
        (InvalidImageError("big"), P, E.INVALID_INPUT),
        (InvalidImageError("not an image"), P, E.INVALID_INPUT),
        (GenerationFailed("once"), T, E.GENERATION_FAILED),
        (GenerationOOMError("oom"), T, E.GENERATION_FAILED),
        (PipelineError("odd"), T, E.GENERATION_FAILED),
        (ContentFilteredError("flagged", checked=3, flagged=3, redraws=2), P, E.CONTENT_FILTERED),
        (RequestTooLargeError("out of memory twice"), P, E.TOO_LARGE),
        (CrashedWorker("2 workers died"), P, E.CRASHED_WORKER),
        (GenerationTimedOut("past its deadline"), F, E.GENERATION_FAILED),
        (TransientError("s3"), T, E.INTERNAL_ERROR),
        (_client_error("SlowDown"), T, E.INTERNAL_ERROR),
        (_client_error("AccessDenied"), T, E.INTERNAL_ERROR),
        (_client_error("ExpiredToken", "ReceiveMessage"), T, E.INTERNAL_ERROR),
        (EndpointConnectionError(endpoint_url="http://x"), T, E.INTERNAL_ERROR),
        (ReadTimeoutError(endpoint_url="http://x"), T, E.INTERNAL_ERROR),
        (TimeoutError(), T, E.INTERNAL_ERROR),
        (ConnectionResetError("reset"), T, E.INTERNAL_ERROR),
        (PipelineBrokenError("oom twice"), F, E.INTERNAL_ERROR),
        (ModelLoadError("missing"), F, E.INTERNAL_ERROR),
        (ConfigError("bad setting"), F, E.INTERNAL_ERROR),
        (MemoryError(), T, E.INTERNAL_ERROR),
        (KeyError("bug"), T, E.INTERNAL_ERROR),
    ],
)
def test_classification(error: BaseException, severity: Severity, code: ErrorCode) -> None:
    verdict = classify(error)
    assert verdict.severity is severity
    assert verdict.code is code
    assert verdict.retryable is (severity is T)
    assert verdict.message


def test_log_level_follows_the_class() -> None:
    assert classify(InvalidRequest("x")).log_level == logging.WARNING
    assert classify(GenerationOOMError("x")).log_level == logging.WARNING
    assert classify(PipelineBrokenError("x")).log_level == logging.CRITICAL
    unexpected = classify(ZeroDivisionError("bug"))
    assert unexpected.log_level == logging.ERROR
    assert unexpected.expected is False
    assert classify(InvalidRequest("x")).expected is True


def test_aws_messages_name_the_code_but_not_the_caller() -> None:
    verdict = classify(_client_error("AccessDenied"))
    assert verdict.message == "AWS PutObject failed: AccessDenied"
    assert "arn:" not in verdict.message


def test_messages_are_short_and_single_line() -> None:
    verdict = classify(InvalidRequest("line\n" * 1000))
    assert "\n" not in verdict.message
    assert len(verdict.message) <= 500
