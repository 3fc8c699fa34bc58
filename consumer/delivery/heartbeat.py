"""Keeps every received request hidden until it is deleted or released.

SQS hands a request to another consumer when its visibility timeout lapses.
A job may run far longer than the queue's timeout, and a prefetched request
may wait behind it, so each tracked request has its visibility extended by
``VISIBILITY_TIMEOUT_S`` when half of it is left. If the worker dies, the
extensions stop and the request returns within that time.

A request is received with a short hold (:attr:`Heartbeat.receive_hold_s`,
at most ``RECEIVE_HOLD_S``) and extended to the full timeout right away. The
hold bounds the cost of an interrupted long poll: SQS goes on serving a
ReceiveMessage whose connection was closed, and a message it hands to that
dead connection stays hidden for the hold only, not for a whole
``VISIBILITY_TIMEOUT_S`` (which may be many minutes for a slow model).

SQS caps the total hidden time at 12 hours from receipt. Near the cap the
heartbeat makes one last extension up to it and then gives up on that
request (with a warning); the request may then be delivered again, which
the idempotency check makes harmless.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from consumer.aws.request_queue import ReceivedMessage, RequestQueue
from consumer.classify import aws_error_code, is_outage
from consumer.clock import Clock
from consumer.delivery.backoff import SQS_MAX_VISIBILITY_S

log = structlog.get_logger(__name__)

# Errors that mean the receipt handle is no longer ours: stop extending it.
_LOST = frozenset({"ReceiptHandleIsInvalid", "MessageNotInflight", "InvalidParameterValue"})
# Room left below the 12-hour cap for clock differences and call latency.
CAP_MARGIN_S = 30.0
# The visibility a request is received with, before its first extension.
RECEIVE_HOLD_S = 10


@dataclass
class _Hold:
    message: ReceivedMessage
    deadline: float
    # How long the last grant hid the request; it is extended when half is gone.
    granted_s: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Heartbeat:
    """Extends the visibility of tracked requests before it lapses.

    Args:
        queue: the request queue.
        visibility_s: each extension hides a request for this long.
        clock: the time source (a fake one in tests).
        cap_s: SQS's limit on the total hidden time of one receipt.
    """

    def __init__(
        self,
        queue: RequestQueue,
        visibility_s: int,
        clock: Clock,
        *,
        cap_s: float = SQS_MAX_VISIBILITY_S,
    ) -> None:
        self.queue = queue
        self.visibility_s = visibility_s
        self.cap_s = cap_s
        self._clock = clock
        self._holds: dict[str, _Hold] = {}
        self._wake = asyncio.Event()
        # Told of an extension failing as in an SQS outage (the worker pauses).
        self.on_outage: Callable[[BaseException], None] | None = None

    @property
    def receive_hold_s(self) -> int:
        """The visibility timeout to receive requests with."""
        return min(self.visibility_s, RECEIVE_HOLD_S)

    @property
    def interval(self) -> float:
        """How often :meth:`run` looks for requests due for an extension.

        A quarter of the shortest grant, so a request is seen at least once
        between half of its hold being gone and the hold lapsing.
        """
        return min(5.0, max(0.05, self.receive_hold_s / 4))

    def __contains__(self, message: ReceivedMessage) -> bool:
        return message.receipt_handle in self._holds

    def __len__(self) -> int:
        return len(self._holds)

    def track(self, message: ReceivedMessage) -> None:
        """Keep `message` hidden from now on (it was received with :attr:`receive_hold_s`)."""
        deadline = message.received_at + self.receive_hold_s
        self._holds[message.receipt_handle] = _Hold(message, deadline, self.receive_hold_s)
        self._wake.set()

    async def release(self, message: ReceivedMessage) -> None:
        """Stop extending `message`, waiting for an extension already sent.

        Call before deleting a request or setting its visibility, so that a
        late extension cannot undo a release or a retry backoff.
        """
        hold = self._holds.pop(message.receipt_handle, None)
        if hold is not None:
            async with hold.lock:
                pass

    async def hand_back(self, message: ReceivedMessage, seconds: int) -> None:
        """Stop extending `message`, then hide it for `seconds` from now (0:
        visible at once). Raises what the queue's call raises."""
        # In this order: an extension sent after the new visibility would undo it.
        await self.release(message)
        await self.queue.set_visibility(message, seconds)

    async def beat(self) -> None:
        """Extend every tracked request whose visibility is half gone.

        A short job finishes within its receive hold and costs no extension.
        """
        now = self._clock.monotonic()
        due = [h for h in self._holds.values() if h.deadline - now <= h.granted_s / 2]
        if due:
            await asyncio.gather(*(self._extend(hold) for hold in due))

    async def run(self) -> None:
        """Beat until cancelled: every :attr:`interval`, and at once after a track."""
        while True:
            self._wake.clear()
            await self.beat()
            sleep = asyncio.ensure_future(self._clock.sleep(self.interval))
            woken = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({sleep, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleep.cancel()
                woken.cancel()

    async def _extend(self, hold: _Hold) -> None:
        message = hold.message
        async with hold.lock:
            if self._holds.get(message.receipt_handle) is not hold:
                return  # released while waiting for the lock
            now = self._clock.monotonic()
            allowed = int(self.cap_s - (now - message.received_at) - CAP_MARGIN_S)
            seconds = min(self.visibility_s, allowed)
            if seconds <= 0:
                self._give_up(message, "the 12-hour visibility cap is reached")
                return
            try:
                await self.queue.set_visibility(message, seconds)
            except (ClientError, BotoCoreError) as error:
                self._failed(message, error)
                return
            hold.deadline = now + seconds
            hold.granted_s = seconds
            if seconds < self.visibility_s:
                self._give_up(message, "the 12-hour visibility cap is reached")

    def _failed(self, message: ReceivedMessage, error: ClientError | BotoCoreError) -> None:
        code = aws_error_code(error)
        if self.on_outage is not None and is_outage(error):
            self.on_outage(error)  # said once per outage, not once per extension
            return
        if code in _LOST:
            self._give_up(message, f"SQS refused the extension ({code})")
        else:
            # Still due, so the next beat tries again.
            log.warning(
                "heartbeat_extension_failed",
                sqs_message_id=message.message_id,
                error=code or type(error).__name__,
            )

    def _give_up(self, message: ReceivedMessage, why: str) -> None:
        self._holds.pop(message.receipt_handle, None)
        log.warning(
            "heartbeat_gave_up",
            sqs_message_id=message.message_id,
            reason=why,
            note="the request may be delivered again; the idempotency check keeps it harmless",
        )
