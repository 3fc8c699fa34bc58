"""The jobs a benchmark sends, and the collector that waits for their events.

The harness talks to the system under test only through the wire contract:
request bodies go onto the queue, completion events come back through the
observer queue subscribed to the topic (raw delivery).
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from consumer.cli.local_aws import SandboxResources

USER_ID = "bench-user"
AVATAR_KEY = f"avatars/{USER_ID}.png"
PROMPT = "a lighthouse on a cliff at dusk, seen from the beach"
SQS_BATCH = 10


def avatar_png(side: int) -> bytes:
    """A photo-like PNG of `side` x `side`: smooth gradients under noise.

    Noise keeps it about as large on the wire as a real photo (400 KB at 512),
    so the download is not flattered by a picture that compresses to nothing.
    """
    red = Image.radial_gradient("L").resize((side, side))
    green = Image.effect_noise((side, side), 40)
    blue = Image.linear_gradient("L").resize((side, side))
    out = io.BytesIO()
    Image.merge("RGB", (red, green, blue)).save(out, format="PNG")
    return out.getvalue()


def upload_avatar(stack: SandboxResources, side: int) -> None:
    """Put the one user's avatar where a memory job looks for it."""
    stack.client("s3").put_object(
        Bucket=stack.bucket, Key=AVATAR_KEY, Body=avatar_png(side), ContentType="image/png"
    )


def request_body(job_id: str, side: int, seed: int) -> str:
    """A memory job drawing a `side` x `side` picture of the one user."""
    return json.dumps(
        {
            "job_id": job_id,
            "kind": "memory",
            "user_id": USER_ID,
            "prompt": PROMPT,
            "num_inference_steps": 30,
            "seed": seed,
            "width": side,
            "height": side,
        }
    )


def job_ids(prefix: str, count: int) -> list[str]:
    """`count` job ids unique to one system and job length."""
    return [f"{prefix}-{index:04d}" for index in range(count)]


def send_jobs(stack: SandboxResources, ids: Sequence[str], side: int) -> dict[str, float]:
    """Send one request per id, ten per call; the monotonic time each was sent."""
    sqs = stack.client("sqs")
    sent: dict[str, float] = {}
    for start in range(0, len(ids), SQS_BATCH):
        batch = ids[start : start + SQS_BATCH]
        entries = [
            {"Id": str(n), "MessageBody": request_body(job_id, side, start + n)}
            for n, job_id in enumerate(batch)
        ]
        now = time.monotonic()
        response = sqs.send_message_batch(QueueUrl=stack.queue_url, Entries=entries)
        if response.get("Failed"):
            raise RuntimeError(f"send_message_batch failed: {response['Failed']}")
        sent.update(dict.fromkeys(batch, now))
    return sent


@dataclass
class Arrival:
    """One completion event and the monotonic time the harness received it."""

    at: float
    event: dict[str, Any]


@dataclass
class EventCollector:
    """Reads the observer queue on a thread, keeping the first event per job.

    Duplicated events (allowed by the contract) are counted, not kept.
    """

    stack: SandboxResources
    arrivals: dict[str, Arrival] = field(default_factory=dict)
    duplicates: int = 0
    error: BaseException | None = None
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> EventCollector:
        self._thread = threading.Thread(target=self._run, name="event-collector", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            # A receive waits at most one second, so this join is bounded.
            self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            self._poll()
        except Exception as error:  # reported by wait_for, which would otherwise time out
            with self._changed:
                self.error = error
                self._changed.notify_all()

    def _poll(self) -> None:
        sqs = self.stack.client("sqs")
        while not self._stop.is_set():
            response = sqs.receive_message(
                QueueUrl=self.stack.observer_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            now = time.monotonic()
            messages = response.get("Messages", [])
            if not messages:
                continue
            self._record(now, (json.loads(m["Body"]) for m in messages))
            sqs.delete_message_batch(
                QueueUrl=self.stack.observer_url,
                Entries=[
                    {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]}
                    for n, m in enumerate(messages)
                ],
            )

    def _record(self, now: float, events: Iterable[dict[str, Any]]) -> None:
        with self._changed:
            for event in events:
                job_id = str(event.get("job_id"))
                if job_id in self.arrivals:
                    self.duplicates += 1
                else:
                    self.arrivals[job_id] = Arrival(now, event)
            self._changed.notify_all()

    def wait_for(self, ids: Iterable[str], timeout_s: float) -> dict[str, Arrival]:
        """The arrivals of `ids`; raise :class:`TimeoutError` if some are missing."""
        wanted = set(ids)
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not wanted <= self.arrivals.keys():
                if self.error is not None:
                    raise RuntimeError(f"event collector failed: {self.error!r}")
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = len(wanted - self.arrivals.keys())
                    raise TimeoutError(f"{missing} of {len(wanted)} events missing")
                self._changed.wait(timeout=min(left, 1.0))
            return {job_id: self.arrivals[job_id] for job_id in wanted}
