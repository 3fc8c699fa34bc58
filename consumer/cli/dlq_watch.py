"""Looking for one sent request in the dead-letter queue, for `submit --wait`.

A request can reach the DLQ without any completion event: SQS moves a
message there by itself once it was received ``maxReceiveCount`` times and
no worker finished it (workers crashing on it). Waiting for an event would
then wait out the whole timeout. The watch reads the DLQ's size (which
disturbs nothing) and looks inside only when it has grown, so a quiet DLQ
costs one ``GetQueueAttributes`` per look; a look peeks like
``illustrator dlq list`` (each message seen counts as one receive).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from consumer.cli.redrive import DeadLetter, dlq_size, peek

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

# How many DLQ messages one look reads at most.
PEEK_LIMIT = 100


class DeadLetterWatch:
    """Finds the request sent as `message_id` (or any copy of `job_id`) in the DLQ at `url`."""

    def __init__(self, sqs: SQSClient, url: str, job_id: str) -> None:
        self.sqs = sqs
        self.url = url
        self.job_id = job_id
        self.message_ids: set[str] = set()
        self._seen: int | None = None

    async def start(self) -> None:
        """Note the DLQ's size before the request is sent."""
        self._seen = await dlq_size(self.sqs, self.url)

    def _ours(self, letter: DeadLetter) -> bool:
        # A worker's dead-letter copy has a new message id but the same body.
        return letter.message_id in self.message_ids or letter.job_id == self.job_id

    async def look(self, *, always: bool = False) -> DeadLetter | None:
        """The request's DLQ entry, if there; the DLQ is read only when it has
        grown since the last look, or when `always`."""
        size = await dlq_size(self.sqs, self.url)
        grown = self._seen is None or size > self._seen
        self._seen = size
        if not (grown or always) or size == 0:
            return None
        letters = await peek(self.sqs, self.url, PEEK_LIMIT)
        return next((letter for letter in letters if self._ours(letter)), None)


async def watch_dead_letters(
    sqs: SQSClient, queue_url: str, configured: str, job_id: str
) -> DeadLetterWatch | None:
    """A started watch on the DLQ of `queue_url` (`configured` when set, else its
    RedrivePolicy's); ``None``, said once on stderr, when there is none or it
    cannot be read (the wait then goes on without it)."""
    import sys

    from botocore.exceptions import BotoCoreError, ClientError

    from consumer.aws.queue_meta import dead_letter_url

    try:
        url = await dead_letter_url(sqs, queue_url, configured)
        if url is None:
            return None
        watch = DeadLetterWatch(sqs, url, job_id)
        await watch.start()
    except (ClientError, BotoCoreError) as error:
        from consumer.cli.terminal import aws_error_line

        line = aws_error_line("illustrator submit", error, "sqs")
        print(f"{line} (the DLQ is not watched)", file=sys.stderr)
        return None
    return watch
