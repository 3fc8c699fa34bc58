"""Start-up checks: every queue, the topic and the bucket answer before the model loads.

A worker whose configuration cannot work says so at once, before it spends
minutes loading a model, instead of retrying a call that can never succeed.
Each resource is asked once, with a call the worker's role may make anyway:

* each request queue (``SQS_QUEUE_URL``, ``SQS_PRIORITY_QUEUE_URL``):
  ``GetQueueAttributes``, which also names its RedrivePolicy's dead-letter
  queue, then found with ``GetQueueUrl``; ``SQS_DLQ_URL``, when set, with
  ``GetQueueAttributes``;
* the topic (``SNS_TOPIC_ARN``): ``GetTopicAttributes``;
* the bucket (``S3_BUCKET_NAME``): a one-key listing of the first model
  source kept in it (the role may list the model prefix, nothing else), or
  ``GetBucketLocation`` when no model source lives there.

The calls run side by side. A definitive answer (no such queue, topic or bucket, access denied, a
malformed URL or ARN, no credentials) raises :class:`ConfigError` naming the
setting, the resource and AWS's own message: one line and exit status 2. An
outage (connection error, timeout, 5xx, throttling) is asked again with a
jittered backoff while ``/health`` reports the service paused, as the
running worker does, until ``STARTUP_TIMEOUT_S``; then
:class:`StartupTimeout`, a fatal error (exit 1).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import structlog

from consumer.aws.clients import AwsClients
from consumer.aws.queue_meta import redrive_policy, url_of_arn
from consumer.aws.s3_download import is_s3_uri, parse_s3_uri
from consumer.classify import aws_error_text, is_definitive, is_outage
from consumer.clock import Clock
from consumer.delivery.backoff import JitteredBackoff
from consumer.delivery.worker_state import StatusBoard
from consumer.errors import ConfigError, FatalError
from consumer.settings import Settings
from pipeline.api.config import BUILTIN_BLANK

log = structlog.get_logger(__name__)

BACKOFF_BASE_S = 0.2
# Short: a probe is one cheap call, and a start waits for nothing else.
BACKOFF_MAX_S = 5.0


class StartupTimeout(FatalError):
    """A service was still out when ``STARTUP_TIMEOUT_S`` ran out."""


@dataclass(frozen=True, slots=True)
class _Ask:
    """One call about one resource, and the setting that named it."""

    setting: str
    resource: str
    service: str
    call: Callable[[], Awaitable[Any]]


class _Checker:
    """Asks, retrying outages until the deadline; a definitive refusal ends it."""

    def __init__(self, clock: Clock, timeout_s: float) -> None:
        self.clock = clock
        self.timeout_s = timeout_s
        self.deadline = clock.monotonic() + timeout_s
        self.out: list[str] = []

    async def __call__(self, ask: _Ask) -> Any:
        backoff = JitteredBackoff(BACKOFF_BASE_S, BACKOFF_MAX_S)
        while True:
            try:
                answer = await ask.call()
            except Exception as error:
                await self._failed(ask, error, backoff)
                continue
            if ask.service in self.out:
                self.out.remove(ask.service)
                log.info("startup_check_recovered", service=ask.service)
            return answer

    async def _failed(self, ask: _Ask, error: Exception, backoff: JitteredBackoff) -> None:
        where = f"{ask.setting}={ask.resource}"
        if is_definitive(error):
            line = f"{where}: {aws_error_text(error)}"
            log.error("startup_check_failed", setting=ask.setting, error=line)
            raise ConfigError(line) from None
        if not is_outage(error):
            raise error  # not an AWS answer at all: a bug, with its traceback
        left = self.deadline - self.clock.monotonic()
        if left <= 0:
            raise StartupTimeout(
                f"{where}: {ask.service.upper()} did not answer within "
                f"STARTUP_TIMEOUT_S={self.timeout_s:g}s ({aws_error_text(error)})"
            )
        if ask.service not in self.out:
            self.out.append(ask.service)
        delay = min(backoff.next_delay(), left)
        log.warning(
            "startup_check_waiting",
            setting=ask.setting,
            service=ask.service,
            error=aws_error_text(error),
            retry_in_s=round(delay, 2),
        )
        await self.clock.sleep(delay)


def _is_topic_arn(value: str) -> bool:
    parts = value.split(":")
    return len(parts) == 6 and parts[0] == "arn" and parts[2] == "sns" and all(parts[3:])


def _model_sources(settings: Settings) -> Iterator[str]:
    """The ``s3://`` sources the model load will read, in the order it reads them."""
    if settings.model_path == BUILTIN_BLANK:
        return
    if settings.safety_checker_path:
        yield settings.safety_checker_path
    yield settings.model_s3_path
    if settings.enable_ip_adapter:
        yield settings.ip_adapter_path
    if settings.enable_lora:
        yield settings.lora_path
    yield settings.vae_path


def _bucket_ask(settings: Settings, clients: AwsClients) -> _Ask:
    bucket = settings.s3_bucket_name
    for source in _model_sources(settings):
        where = parse_s3_uri(source) if is_s3_uri(source) else None
        if where is not None and where.bucket == bucket:
            prefix = where.key

            def listing(prefix: str = prefix) -> Awaitable[Any]:
                return clients.s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)

            return _Ask("S3_BUCKET_NAME", f"{bucket} (listing {prefix})", "s3", listing)
    # GetBucketLocation rather than HeadBucket: HeadBucket needs s3:ListBucket
    # on the whole bucket, which the worker's role grants only under models/.
    return _Ask(
        "S3_BUCKET_NAME", bucket, "s3", lambda: clients.s3.get_bucket_location(Bucket=bucket)
    )


async def _queue(
    check: _Checker, clients: AwsClients, setting: str, url: str, dlq_known: bool
) -> None:
    """Ask the queue at `url`, then its RedrivePolicy's DLQ unless `dlq_known`."""
    sqs = clients.sqs
    answer = await check(
        _Ask(
            setting,
            url,
            "sqs",
            lambda: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"]),
        )
    )
    target, _ = redrive_policy(answer.get("Attributes", {}))
    if target is None or dlq_known:
        return
    named = f"{setting} RedrivePolicy deadLetterTargetArn"
    try:
        # GetQueueUrl, which the role may call on its DLQs: the queue exists
        # and is the caller's to find.
        await check(_Ask(named, target, "sqs", lambda: url_of_arn(sqs, target)))
    except ValueError as error:
        raise ConfigError(f"{named}={target}: {error}") from None


async def _all(checks: list[Coroutine[Any, Any, Any]]) -> None:
    """Run `checks` side by side; the first to fail (in the given order, of
    those failed) stops the others and is raised."""
    tasks = [asyncio.ensure_future(each) for each in checks]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:
            failure = task.exception() if task.done() and not task.cancelled() else None
            if failure is not None:
                raise failure
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _checks(
    settings: Settings, clients: AwsClients, check: _Checker
) -> list[Coroutine[Any, Any, Any]]:
    sqs, sns, topic = clients.sqs, clients.sns, settings.sns_topic_arn
    known = bool(settings.sqs_dlq_url)
    checks = [_queue(check, clients, "SQS_QUEUE_URL", settings.sqs_queue_url, known)]
    if url := settings.sqs_priority_queue_url:
        checks.append(_queue(check, clients, "SQS_PRIORITY_QUEUE_URL", url, dlq_known=False))
    if dlq := settings.sqs_dlq_url:

        def dead_letters() -> Awaitable[Any]:
            return sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])

        checks.append(check(_Ask("SQS_DLQ_URL", dlq, "sqs", dead_letters)))
    topic_ask = _Ask(
        "SNS_TOPIC_ARN", topic, "sns", lambda: sns.get_topic_attributes(TopicArn=topic)
    )
    checks += [check(topic_ask), check(_bucket_ask(settings, clients))]
    return checks


async def check_resources(
    settings: Settings, clients: AwsClients, clock: Clock, board: StatusBoard
) -> None:
    """Ask every queue, the topic and the bucket once; see the module's account.

    While a service is out the board names it (``/health`` answers
    ``paused``), so an instance that boots during an outage is not replaced
    for it. Raises :class:`ConfigError` or :class:`StartupTimeout`.
    """
    topic = settings.sns_topic_arn
    if not _is_topic_arn(topic):
        raise ConfigError(f"SNS_TOPIC_ARN={topic}: not an SNS topic ARN (arn:aws:sns:...)")
    check = _Checker(clock, settings.startup_timeout_s)
    previous = board.paused_by
    board.paused_by = lambda: list(check.out)
    try:
        # Side by side: a worker restarted often (Spot, a crash loop) should
        # not pay one round trip per resource.
        await _all(_checks(settings, clients, check))
    finally:
        board.paused_by = previous
    log.info("startup_checks_passed")
