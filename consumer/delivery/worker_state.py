"""The worker's one explicit state, and the health answers derived from it.

The state is computed from a few facts (loaded? draining? a fatal error? the
receive loop failing? the GPU busy?) so that it can never disagree with them.
The sidecar reads it; nothing here touches the GPU or the network.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from consumer.clock import Clock

READY_MESSAGE = "Image generation service is ready"


class WorkerState(enum.StrEnum):
    """Where the worker is in its life."""

    STARTING = "starting"
    READY = "ready"
    BUSY = "busy"
    PAUSED = "paused"
    DRAINING = "draining"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True, slots=True)
class HealthReport:
    """One health answer: the HTTP status and the JSON body."""

    status_code: int
    body: dict[str, Any]


def _never_busy() -> bool:
    return False


def _nothing_out() -> list[str]:
    return []


@dataclass
class StatusBoard:
    """The facts the state is derived from, updated by the worker.

    Attributes:
        clock: for uptime and the age of the last poll.
        worker_id: reported in health answers (a host name, not a secret).
        busy_probe: whether the GPU is generating right now.
        paused_by: the AWS services out now; while any is, the worker
            takes no new request (paused).
    """

    clock: Clock
    worker_id: str = ""
    busy_probe: Callable[[], bool] = _never_busy
    paused_by: Callable[[], list[str]] = _nothing_out
    model: str | None = None
    running: bool = False
    draining_reason: str | None = None
    fatal_reason: str | None = None
    trouble: str | None = None
    jobs_in_flight: int = 0
    last_poll: float | None = None
    started: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.clock.monotonic()

    # Facts, set by the service and the worker.

    def loaded(self, model: str) -> None:
        """The generator is loaded."""
        self.model = model

    def loop_started(self) -> None:
        """The receive loop runs."""
        self.running = True

    def loop_stopped(self) -> None:
        """The receive loop has ended."""
        self.running = False

    def drain(self, reason: str) -> None:
        """Work is being wound down."""
        self.draining_reason = self.draining_reason or reason

    def fail(self, reason: str) -> None:
        """The worker is broken and is about to exit."""
        self.fatal_reason = self.fatal_reason or reason

    def polled(self) -> None:
        """A receive call succeeded: the loop is healthy again."""
        self.last_poll = self.clock.monotonic()
        self.trouble = None

    def troubled(self, reason: str) -> None:
        """The loop's own AWS calls fail; unhealthy until one succeeds."""
        self.trouble = reason

    # What follows from them.

    @property
    def state(self) -> WorkerState:
        """The one state, in order of precedence."""
        if self.fatal_reason is not None:
            return WorkerState.UNHEALTHY
        if self.draining_reason is not None:
            return WorkerState.DRAINING
        # Paused also before the model loads: the start-up checks wait out an
        # outage, and an instance booting through one is not to be replaced.
        if self.paused_by():
            return WorkerState.PAUSED
        if self.model is None:
            return WorkerState.STARTING
        if self.trouble is not None:
            return WorkerState.UNHEALTHY
        if not self.running:
            return WorkerState.STARTING
        return WorkerState.BUSY if self.busy_probe() else WorkerState.READY

    @property
    def live(self) -> bool:
        """Whether the process should be left running (only a fatal error says no)."""
        return self.fatal_reason is None

    @property
    def ready(self) -> bool:
        """Whether the worker takes jobs."""
        return self.state in (WorkerState.READY, WorkerState.BUSY)

    def _message(self, state: WorkerState) -> str:
        if state in (WorkerState.READY, WorkerState.BUSY):
            return READY_MESSAGE
        if state is WorkerState.STARTING:
            return "Loading the model" if self.model is None else "Starting the consumer loop"
        if state is WorkerState.DRAINING:
            return f"Draining: {self.draining_reason}"
        if state is WorkerState.PAUSED:
            return f"Paused: out of service: {', '.join(self.paused_by())}"
        return f"Unhealthy: {self.fatal_reason or self.trouble}"

    def health(self) -> HealthReport:
        """The ``/health`` answer: 200 when ready, 503 otherwise."""
        state = self.state
        healthy = state in (WorkerState.READY, WorkerState.BUSY)
        now = self.clock.monotonic()
        body: dict[str, Any] = {
            "status": "healthy" if healthy else state.value,
            "message": self._message(state),
            "state": state.value,
            "model": self.model,
            "worker_id": self.worker_id,
            "jobs_in_flight": self.jobs_in_flight,
            "uptime_s": round(now - self.started, 3),
            "last_poll_age_s": None if self.last_poll is None else round(now - self.last_poll, 3),
        }
        if state is WorkerState.PAUSED:
            body["services"] = self.paused_by()
        return HealthReport(200 if healthy else 503, body)

    def probe(self, ok: bool) -> HealthReport:
        """A ``/livez`` or ``/readyz`` answer for the fact `ok`."""
        state = self.state
        body: dict[str, Any] = {"status": "ok" if ok else state.value, "state": state.value}
        if not ok and state is WorkerState.PAUSED:
            body["services"] = self.paused_by()
        return HealthReport(200 if ok else 503, body)
