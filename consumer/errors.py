"""One small hierarchy of failures, each declaring how it is handled.

* permanent: the request itself is wrong (bad body, bad signature, missing or
  undecodable input). Retrying cannot help: one failed event, dead-letter.
* transient: the world was briefly wrong (network, throttling, a one-off GPU
  error). The request goes back on the queue after a backoff.
* fatal: the worker itself is broken (the GPU is wedged, configuration is
  unusable). Stop taking work, release what is in flight, exit non-zero.

Failures are declared where they are raised, never guessed from messages;
`consumer.classify` maps foreign exceptions (botocore, pipeline) onto these.
A bad input picture has one type wherever it is found, in the bucket or
while preparing it: :class:`pipeline.api.errors.InvalidImageError`.
"""

from __future__ import annotations

import enum
from typing import ClassVar


class ErrorCode(enum.StrEnum):
    """The error codes of a failed event (what each means: docs/contract.md)."""

    INVALID_REQUEST = "invalid_request"
    UNAUTHORIZED = "unauthorized"
    INPUT_NOT_FOUND = "input_not_found"
    INVALID_INPUT = "invalid_input"
    CONTENT_FILTERED = "content_filtered"
    TOO_LARGE = "too_large"
    CRASHED_WORKER = "crashed_worker"
    GENERATION_FAILED = "generation_failed"
    INTERNAL_ERROR = "internal_error"


class Severity(enum.Enum):
    """How a failure is handled: dead-letter now, retry later, or stop."""

    PERMANENT = "permanent"
    TRANSIENT = "transient"
    FATAL = "fatal"


class IllustratorError(Exception):
    """Root of the service's own failures."""

    severity: ClassVar[Severity] = Severity.TRANSIENT
    default_code: ClassVar[ErrorCode] = ErrorCode.INTERNAL_ERROR

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code


class PermanentError(IllustratorError):
    """The request cannot succeed however often it is tried."""

    severity = Severity.PERMANENT
    default_code = ErrorCode.INVALID_REQUEST


class InvalidRequest(PermanentError):
    """The body is not JSON, breaks the schema, or has an unsupported version."""

    default_code = ErrorCode.INVALID_REQUEST


class Unauthorized(PermanentError):
    """The signature is missing or wrong."""

    default_code = ErrorCode.UNAUTHORIZED


class InputNotFound(PermanentError):
    """No input image exists for the request."""

    default_code = ErrorCode.INPUT_NOT_FOUND


class CrashedWorker(PermanentError):
    """The request was in flight when ``MAX_WORKER_DEATHS`` workers died: it
    is not handed to another one."""

    default_code = ErrorCode.CRASHED_WORKER


class TransientError(IllustratorError):
    """Worth trying again later: S3, SNS or the GPU had a bad moment."""

    severity = Severity.TRANSIENT
    default_code = ErrorCode.INTERNAL_ERROR


class GenerationFailed(TransientError):
    """The generator failed on this job (for example out of GPU memory once)."""

    default_code = ErrorCode.GENERATION_FAILED


class FatalError(IllustratorError):
    """The worker cannot go on; it must exit and be replaced."""

    severity = Severity.FATAL
    default_code = ErrorCode.INTERNAL_ERROR


class GenerationTimedOut(FatalError):
    """A generation ran past its deadline, which a request within the cost
    budget does not on a healthy GPU: the worker, not the request, is at
    fault. It stops; the request is charged one worker death."""

    default_code = ErrorCode.GENERATION_FAILED


class ConfigError(FatalError):
    """The configuration is unusable; reported as one line, exit status 2."""
