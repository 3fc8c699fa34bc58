"""What `submit --wait` says about what it waited for, and its exit status.

Each outcome ends in one line on stderr that says what happened and, where
the sender can do something about it, what: sign the request (an
``unauthorized`` event names no job, so it is told by its message id), look
in the DLQ (a request SQS moved there has no event), or look for the output
(nothing came in time).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from consumer.cli.redrive import DeadLetter

EXIT_FAILED = 1
EXIT_TIMEOUT = 3

SIGN_HINT = (
    "the workers check signatures (AUTH_ENABLED=true on their side): set AUTH_ENABLED=true "
    "and AUTH_TOKEN to the workers' token (the stack's AuthTokenSecretArn secret) and send again"
)
UNVERIFIED_HINT = (
    "the signature did not verify: AUTH_TOKEN is not the workers' current or previous token "
    "(read it from the stack's AuthTokenSecretArn secret) and send again"
)
MOVED_BY_SQS = (
    "no worker reported it: SQS moved it after the queue's maxReceiveCount receives that no "
    "worker finished (workers crashing on it?); see `illustrator dlq list` and the runbook's "
    "Redrive section"
)


def _say(line: str) -> None:
    print(f"illustrator submit: {line}", file=sys.stderr)


def anonymous_failure(event: dict[str, Any], job_id: str, message_id: str, signed: bool) -> int:
    """A failed event about the message sent that names no job (its body was not trusted)."""
    error = event.get("error") or {}
    code, text = error.get("code", "?"), error.get("message", "")
    what = f"job {job_id} (message {message_id}) failed: {code}: {text}"
    if code == "unauthorized":
        _say(f"{what}; {UNVERIFIED_HINT if signed else SIGN_HINT}")
    else:
        _say(what)
    return EXIT_FAILED


def dead_lettered(letter: DeadLetter, job_id: str, dlq_url: str) -> int:
    """The request sits in the DLQ and no event came for it."""
    where = f"job {job_id} is in the dead-letter queue {dlq_url} (message {letter.message_id})"
    if letter.error_code:
        _say(f"{where}: {letter.error_code}: {letter.error_message or ''}".rstrip(": "))
    else:
        _say(f"{where} without a completion event: {MOVED_BY_SQS}")
    return EXIT_FAILED


def nothing(job_id: str, timeout_s: float, output_uri: str, dlq_url: str | None) -> int:
    """No event, and the request is not (visibly) in the DLQ."""
    looked = f"; not in the DLQ {dlq_url} either" if dlq_url else ""
    _say(
        f"no event for job {job_id} within {timeout_s:.0f}s{looked}; "
        f"its output would be {output_uri}"
    )
    return EXIT_TIMEOUT
