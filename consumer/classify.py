"""The one place where any exception becomes a decision.

Whatever went wrong (our own hierarchy, the pipeline's errors, botocore's
client and connection errors, timeouts, plain bugs) comes out as a
:class:`Classification`: how it is handled (severity), what the completion
event says (code, message, retryable) and how loudly it is logged.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, NoCredentialsError
from botocore.exceptions import ConnectionError as BotoConnectionError

from consumer.errors import ErrorCode, IllustratorError, Severity
from pipeline.api.errors import (
    ContentFilteredError,
    InvalidImageError,
    ModelLoadError,
    PipelineBrokenError,
    PipelineError,
    RequestTooLargeError,
)

# Messages go into completion events; keep them short.
MAX_MESSAGE = 500


@dataclass(frozen=True, slots=True)
class Classification:
    """What a failure means for the request and for the worker.

    Attributes:
        severity: permanent (dead-letter now), transient (retry later) or
            fatal (stop the worker).
        code: the completion event's error code.
        message: a short description safe to put in an event: no stack
            traces, no AWS account details.
        log_level: the :mod:`logging` level the failure is logged at.
        expected: whether the failure is one the service anticipates; an
            unexpected one is logged with its traceback.
    """

    severity: Severity
    code: ErrorCode
    message: str
    log_level: int
    expected: bool = True

    @property
    def fatal(self) -> bool:
        """Whether the worker must stop."""
        return self.severity is Severity.FATAL

    @property
    def retryable(self) -> bool:
        """Whether trying again could help (the event's ``retryable``)."""
        return self.severity is Severity.TRANSIENT


def _level(severity: Severity) -> int:
    return {
        Severity.PERMANENT: logging.WARNING,
        Severity.TRANSIENT: logging.WARNING,
        Severity.FATAL: logging.CRITICAL,
    }[severity]


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def aws_error_code(error: BaseException) -> str | None:
    """The AWS error code of a botocore :class:`ClientError`, else ``None``."""
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", "Unknown"))
    return None


def _aws_message(error: ClientError | BotoCoreError) -> str:
    # AWS error texts can name the caller's role and account, which do not
    # belong in an event sent to another system; the code says enough.
    if isinstance(error, ClientError):
        operation = getattr(error, "operation_name", "request")
        return f"AWS {operation} failed: {aws_error_code(error)}"
    return f"AWS request failed: {type(error).__name__}"


def _pipeline(error: PipelineError) -> Classification:
    message = _short(str(error) or type(error).__name__)
    if isinstance(error, InvalidImageError):
        return _make(Severity.PERMANENT, ErrorCode.INVALID_INPUT, message)
    if isinstance(error, ContentFilteredError):
        # The same request draws the same pictures: retrying cannot help.
        return _make(Severity.PERMANENT, ErrorCode.CONTENT_FILTERED, message)
    if isinstance(error, RequestTooLargeError):
        # Out of memory again after memory was freed: the request, not the
        # GPU; the message says what to ask for instead.
        return _make(Severity.PERMANENT, ErrorCode.TOO_LARGE, message)
    if isinstance(error, PipelineBrokenError | ModelLoadError):
        return _make(Severity.FATAL, ErrorCode.INTERNAL_ERROR, message)
    # Anything else, running out of GPU memory once included, may pass on a retry.
    return _make(Severity.TRANSIENT, ErrorCode.GENERATION_FAILED, message)


def _make(
    severity: Severity, code: ErrorCode, message: str, expected: bool = True
) -> Classification:
    level = _level(severity) if expected else logging.ERROR
    return Classification(severity, code, message, level, expected)


def classify(error: BaseException) -> Classification:
    """Classify any exception; never raises.

    Unknown exceptions are treated as transient internal errors: a bug that
    hits one request must not stop the worker, and the retry limit still
    ends on the dead-letter queue. Running out of host memory is not fatal
    either: the failed allocation is given back and the worker goes on (input
    preparation turns its own into :class:`~pipeline.api.errors.InvalidImageError`,
    the request's ``invalid_input``); only a broken GPU or model stops it.
    """
    if isinstance(error, IllustratorError):
        return _make(error.severity, error.code, _short(error.message))
    if isinstance(error, PipelineError):
        return _pipeline(error)
    if isinstance(error, ClientError | BotoCoreError):
        return _make(Severity.TRANSIENT, ErrorCode.INTERNAL_ERROR, _aws_message(error))
    if isinstance(error, TimeoutError | asyncio.TimeoutError):
        return _make(Severity.TRANSIENT, ErrorCode.INTERNAL_ERROR, "timed out")
    if isinstance(error, ConnectionError):
        return _make(Severity.TRANSIENT, ErrorCode.INTERNAL_ERROR, f"connection failed: {error}")
    if isinstance(error, MemoryError):
        return _make(Severity.TRANSIENT, ErrorCode.INTERNAL_ERROR, "the worker ran out of memory")
    message = _short(f"{type(error).__name__}: {error}")
    return _make(Severity.TRANSIENT, ErrorCode.INTERNAL_ERROR, message, expected=False)


# Error codes by which AWS services say "slow down": the service is
# overloaded, not the request wrong.
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
    }
)


def is_outage(error: BaseException) -> bool:
    """Whether `error` (after the client's own retries) means the service is out.

    A connection error, a timeout, a 5xx or throttling says nothing about the
    request: the service did not answer it. Anything else (a 4xx, our own
    errors, bugs) is the request's or the deployment's problem.
    """
    if isinstance(
        error,
        HTTPClientError
        | BotoConnectionError
        | TimeoutError
        | asyncio.TimeoutError
        | ConnectionError,
    ):
        return True
    if isinstance(error, ClientError):
        metadata = error.response.get("ResponseMetadata", {})
        status = metadata.get("HTTPStatusCode", 0)
        return int(status or 0) >= 500 or aws_error_code(error) in THROTTLING_CODES
    return False


def is_definitive(error: BaseException) -> bool:
    """Whether an AWS call's failure says the configuration cannot work.

    A refusal that asking again will not change: no such queue, topic or
    bucket, access denied, a malformed URL or ARN, missing or invalid
    credentials (any 4xx but throttling, and botocore's own refusals). An
    outage (see :func:`is_outage`) is not definitive, nor is anything that is
    not an AWS answer at all.
    """
    if is_outage(error):
        return False
    return isinstance(error, ClientError | BotoCoreError)


def aws_error_text(error: BaseException) -> str:
    """AWS's own account of a failed call, for an operator (not for events).

    ``GetQueueAttributes: AWS.SimpleQueueService.NonExistentQueue: The
    specified queue does not exist.`` The message can name the caller's role
    and account, which is what an operator fixing a deployment needs, and why
    completion events carry only the code (see :func:`classify`).
    """
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(details.get("Code") or status or "Unknown")
        # HEAD answers have no body: S3's HeadBucket says only 403 or 404.
        message = " ".join(str(details.get("Message") or _HTTP_REASONS.get(code, "")).split())
        operation = getattr(error, "operation_name", "the call")
        return _short(f"{operation}: {code}: {message}".rstrip(": "))
    if isinstance(error, NoCredentialsError):
        return "no AWS credentials found (environment, profile or instance role)"
    return _short(f"{type(error).__name__}: {error}")


_HTTP_REASONS = {"301": "Moved Permanently (another region)", "400": "Bad Request"}
_HTTP_REASONS |= {"403": "Forbidden", "404": "Not Found"}
