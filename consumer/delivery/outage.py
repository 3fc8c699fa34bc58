"""Outages of S3, SNS and SQS: noticed once, probed, waited out.

A call that still fails after the client's own retries with a connection
error, a timeout, a 5xx or throttling (:func:`consumer.classify.is_outage`)
says nothing about the request it served: the service is out. The client's
retries can take 15 s, so the worker also follows each attempt
(:meth:`Outages.watch`): a service none of whose attempts has been answered
for :data:`NOTICE_S`, or whose last :data:`NOTICE_ATTEMPTS` attempts all
failed, is out too, while the client still retries. The first
such failure marks its service out (one log line, one metric change per
outage) and starts a probe of that service alone: one cheap call, again and
again with a backoff from :data:`PROBE_FIRST_S` doubling to :data:`PROBE_MAX_S`,
each given :data:`PROBE_TIMEOUT_S` to answer. Any answer, even a refusal
(403, 404), ends the outage: the service is there. While any service is out
the worker takes no new request; the sidecar reports ``paused``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import structlog
from botocore.exceptions import ClientError
from prometheus_client import Counter, Gauge

from consumer.aws.clients import AwsClients
from consumer.classify import THROTTLING_CODES, classify, is_outage
from consumer.clock import Clock
from consumer.errors import TransientError
from consumer.metrics import PREFIX, Metrics
from consumer.settings import Settings

log = structlog.get_logger(__name__)

# The probe's backoff: the first wait, and the longest (under the contract's
# 30 s, so a service is seen back within 30 s of answering).
PROBE_FIRST_S = 1.0
PROBE_MAX_S = 20.0
# A probe that has not answered in this time counts as "still out"; it keeps
# the client's own retries from stretching one probe past the backoff.
PROBE_TIMEOUT_S = 5.0
# Attempts failing as in an outage, with none answered in between, for this
# long or this many in a row mark the service out before the client's
# retries end (three attempts of one call take at most 3 s): a random failed
# attempt is soon followed by an answer, an outage is not.
NOTICE_S = 1.0
NOTICE_ATTEMPTS = 3
# Failed attempts further apart than this are not one streak (the first one's
# call ended or was given up without another attempt).
STREAK_GAP_S = 5.0


class Service(enum.StrEnum):
    """The AWS services the worker depends on."""

    S3 = "s3"
    SNS = "sns"
    SQS = "sqs"
    # Only where the signing tokens come from Secrets Manager.
    SECRETS = "secretsmanager"


class ServiceOut(TransientError):
    """A call failed because its service is out; the request is not at fault."""

    def __init__(self, service: Service, cause: BaseException) -> None:
        super().__init__(f"{service.value} is out: {classify(cause).message}")
        self.service = service


Probe = Callable[[], Awaitable[object]]


@dataclass
class _Out:
    since: float
    reason: str
    back: asyncio.Event
    task: asyncio.Task[None] | None = None


class Outages:
    """Which services are out, and the probes that find them back.

    Args:
        clock: the time source for the probe's backoff (a fake one in tests).
        metrics: the registry ``illustrator_service_out{service}`` (1 while
            out) and ``illustrator_outages_total{service}`` are added to.
        probes: one cheap call per service; a service without one is taken
            back after the first backoff.
    """

    def __init__(
        self,
        clock: Clock,
        metrics: Metrics,
        probes: dict[Service, Probe] | None = None,
    ) -> None:
        self._clock = clock
        self._probes = dict(probes or {})
        self._out: dict[Service, _Out] = {}
        # Each service's failed attempts since its last answer: the first's
        # time, the last's, and how many.
        self._failing: dict[Service, tuple[float, float, int]] = {}
        self._watched: list[tuple[Any, str, Callable[..., None]]] = []
        self._clear = asyncio.Event()
        self._clear.set()
        self._gauge = Gauge(
            f"{PREFIX}_service_out",
            "1 while the service is out (the worker is paused).",
            ["service"],
            registry=metrics.registry,
        )
        self._count = Counter(
            f"{PREFIX}_outages",
            "Outages of each service noticed by the worker.",
            ["service"],
            registry=metrics.registry,
        )
        for service in Service:
            self._gauge.labels(service=service.value).set(0)

    @property
    def out(self) -> list[str]:
        """The services out now, by name (empty when all are up)."""
        return sorted(service.value for service in self._out)

    def is_out(self, service: Service) -> bool:
        """Whether `service` is out now."""
        return service in self._out

    @contextlib.contextmanager
    def guard(self, service: Service) -> Iterator[None]:
        """Turn an outage-type failure of the enclosed `service` call into
        :class:`ServiceOut`, marking the service out; other errors pass."""
        try:
            yield
        except ServiceOut:
            raise
        except Exception as error:
            if not is_outage(error):
                raise
            self.mark(service, error)
            raise ServiceOut(service, error) from error

    def watch(self, service: Service, events: Any) -> None:
        """Follow every attempt of the client whose event system is `events`
        (``client.meta.events``): each answer, each failure as in an outage."""

        def attempted(**kwargs: Any) -> None:
            self.attempted(service, _attempt_error(**kwargs))

        name = f"response-received.{service.value}"
        events.register(name, attempted)
        self._watched.append((events, name, attempted))

    def attempted(self, service: Service, error: BaseException | None) -> None:
        """One attempt of a call to `service` ended: answered (`error` is
        ``None``) or failed as in an outage; :data:`NOTICE_S` or
        :data:`NOTICE_ATTEMPTS` of failures with no answer in between mark
        the service out."""
        if error is None:
            self._failing.pop(service, None)
            return
        now = self._clock.monotonic()
        first, last, count = self._failing.get(service, (now, now, 0))
        if now - last > STREAK_GAP_S:
            first, count = now, 0
        self._failing[service] = (first, now, count + 1)
        if now - first >= NOTICE_S or count + 1 >= NOTICE_ATTEMPTS:
            self._failing.pop(service, None)
            self.mark(service, error)

    def mark(self, service: Service, error: BaseException) -> None:
        """`service` failed as in an outage; the first time, say so and probe it."""
        if service in self._out:
            return
        reason = classify(error).message
        state = _Out(self._clock.monotonic(), reason, asyncio.Event())
        self._out[service] = state
        self._clear.clear()
        self._gauge.labels(service=service.value).set(1)
        self._count.labels(service=service.value).inc()
        log.warning("service_out", service=service.value, error=reason, note="paused")
        state.task = asyncio.create_task(self._probe(service, state), name=f"probe-{service}")

    async def wait_clear(self) -> None:
        """Return once no service is out."""
        await self._clear.wait()

    async def wait_out(self, service: Service, error: BaseException) -> None:
        """Mark `service` out for `error`, and return once no service is out."""
        self.mark(service, error)
        await self.wait_clear()

    async def wait_back(self, service: Service, within: float) -> bool:
        """Wait up to `within` seconds for `service` to be back; whether it is."""
        state = self._out.get(service)
        if state is None:
            return True
        back = asyncio.ensure_future(state.back.wait())
        # The worker's clock, not the loop's: a test's fast clock shortens it.
        lapse = asyncio.ensure_future(self._clock.sleep(max(0.0, within)))
        try:
            await asyncio.wait({back, lapse}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            back.cancel()
            lapse.cancel()
        return service not in self._out

    def close(self) -> None:
        """Stop every probe and stop following attempts (the worker is stopping)."""
        for events, name, handler in self._watched:
            events.unregister(name, handler)
        self._watched.clear()
        for state in self._out.values():
            if state.task is not None:
                state.task.cancel()

    async def _probe(self, service: Service, state: _Out) -> None:
        delay = PROBE_FIRST_S
        probe = self._probes.get(service)
        while True:
            await self._clock.sleep(delay)
            if probe is None or await self._answers(probe):
                break
            delay = min(PROBE_MAX_S, delay * 2)
        self._out.pop(service, None)
        self._gauge.labels(service=service.value).set(0)
        log.info(
            "service_back",
            service=service.value,
            out_s=round(self._clock.monotonic() - state.since, 1),
        )
        state.back.set()
        if not self._out:
            self._clear.set()

    @staticmethod
    async def _answers(probe: Probe) -> bool:
        try:
            await asyncio.wait_for(probe(), PROBE_TIMEOUT_S)
        except Exception as error:
            # A refusal is an answer: the service is there.
            return not is_outage(error)
        return True


def _attempt_error(
    *,
    exception: BaseException | None = None,
    response_dict: dict[str, Any] | None = None,
    parsed_response: dict[str, Any] | None = None,
    **_: Any,
) -> BaseException | None:
    """The outage an attempt (botocore's ``response-received``) ended in, if any."""
    if exception is not None:
        return exception if is_outage(exception) else None
    status = int((response_dict or {}).get("status_code") or 0)
    parsed = parsed_response or {}
    code = str(parsed.get("Error", {}).get("Code", ""))
    if status >= 500 or code in THROTTLING_CODES:
        return ClientError(cast("Any", parsed), "attempt")
    return None


def worker_outages(
    clients: AwsClients, settings: Settings, clock: Clock, metrics: Metrics
) -> Outages:
    """The worker's outages, each service probed with one cheap call.

    Each probe is a call the worker's role allows (infra/illustrator.yaml),
    though a refusal (403) would be an answer too.
    """
    probes: dict[Service, Probe] = {
        Service.S3: lambda: clients.s3.get_bucket_location(Bucket=settings.s3_bucket_name),
        Service.SNS: lambda: clients.sns.get_topic_attributes(TopicArn=settings.sns_topic_arn),
        Service.SQS: lambda: clients.sqs.get_queue_attributes(
            QueueUrl=settings.sqs_queue_url, AttributeNames=["VisibilityTimeout"]
        ),
    }
    secrets = clients.secrets
    if secrets is not None:
        secret_id = settings.auth_token_secret_id
        probes[Service.SECRETS] = lambda: secrets.get_secret_value(SecretId=secret_id)
    outages = Outages(clock, metrics, probes)
    outages.watch(Service.S3, clients.s3.meta.events)
    outages.watch(Service.SNS, clients.sns.meta.events)
    outages.watch(Service.SQS, clients.sqs.meta.events)
    if secrets is not None:
        outages.watch(Service.SECRETS, secrets.meta.events)
    return outages
