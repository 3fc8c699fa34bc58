"""SQS's own redrive, StartMessageMoveTask: started, followed, cancelled on Ctrl-C.

It moves every message of the DLQ, verbatim, and cannot choose by code:
a redrive uses it only when it is to move them all (see
:mod:`consumer.cli.redrive_rules`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from consumer.cli.redrive import RedriveReport

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

MOVE_TASK_POLL_S = 2.0
MOVE_TASK_DONE = frozenset({"COMPLETED", "CANCELLED", "FAILED"})


class MoveTaskRedrive:
    """SQS's own redrive (StartMessageMoveTask), followed until it ends."""

    def __init__(
        self,
        sqs: SQSClient,
        dlq_arn: str,
        queue_arn: str,
        progress: Callable[[RedriveReport], None] = lambda _: None,
        poll_s: float = MOVE_TASK_POLL_S,
    ) -> None:
        self._sqs = sqs
        self._dlq_arn = dlq_arn
        self._queue_arn = queue_arn
        self._progress = progress
        self._poll_s = poll_s
        self.report = RedriveReport(method="move-task")

    async def start(self) -> str:
        """Start the task; its handle. Raises botocore errors where unsupported."""
        response = await self._sqs.start_message_move_task(
            SourceArn=self._dlq_arn, DestinationArn=self._queue_arn
        )
        return response["TaskHandle"]

    async def follow(self, handle: str) -> RedriveReport:
        """Report progress until the task ends; Ctrl-C cancels the task.

        Cancelling keeps what was already moved on the request queue and the
        rest on the DLQ; SQS itself never drops a message in a move task.
        """
        try:
            while True:
                status = await self._status(handle)
                self.report.moved = int(status.get("ApproximateNumberOfMessagesMoved", 0))
                self._progress(self.report)
                if status.get("Status") in MOVE_TASK_DONE:
                    if status.get("Status") == "FAILED":
                        reason = str(status.get("FailureReason", "unknown reason"))
                        self.report.failed["move-task"] = reason
                    return self.report
                await asyncio.sleep(self._poll_s)
        except asyncio.CancelledError:
            await self._sqs.cancel_message_move_task(TaskHandle=handle)
            raise

    async def _status(self, handle: str) -> dict[str, Any]:
        response = await self._sqs.list_message_move_tasks(SourceArn=self._dlq_arn, MaxResults=10)
        results = [dict(r) for r in response.get("Results", [])]
        for result in results:
            if result.get("TaskHandle") == handle:
                return result
        # A finished task no longer shows its handle; the newest entry is ours.
        return results[0] if results else {"Status": "RUNNING"}
