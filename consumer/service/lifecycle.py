"""Safe scale-in and Spot: watch the instance metadata, drain, complete the action.

With ``EC2_LIFECYCLE_WATCH=true`` the consumer polls the EC2 instance metadata
service (IMDSv2: a session token first, then reads with it) for two notices:

* ``autoscaling/target-lifecycle-state`` turning ``Terminated``: the Auto
  Scaling group is scaling in (or replacing) this instance. Its termination
  lifecycle hook holds the instance until the action is completed.
* the same turning ``Warmed:Stopped`` (or another ``Warmed:`` state): the
  group scales in by returning this instance to its warm pool, where it is
  stopped. The launch hook holds it on that way (``Warmed:Pending:Wait``).
* ``spot/instance-action``: EC2 reclaims this Spot instance in two minutes.

Either notice drains the worker (no new jobs, prefetched ones released, the
running one given ``DRAIN_TIMEOUT_S``); once it has stopped, the lifecycle
action is completed with ``CONTINUE`` so the instance goes without waiting
for the hook's timeout: the termination hook's, or for a return to the warm
pool the launch hook's (then the termination hook's, should the group hold
the instance there instead). The metadata endpoint is
``AWS_EC2_METADATA_SERVICE_ENDPOINT`` (the standard AWS variable), by default
``http://169.254.169.254``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import structlog
from botocore.exceptions import BotoCoreError, ClientError

from consumer.aws.clients import client_config, make_session
from consumer.settings import Settings

if TYPE_CHECKING:
    from types import TracebackType

log = structlog.get_logger(__name__)

DEFAULT_ENDPOINT = "http://169.254.169.254"
ENDPOINT_VARIABLE = "AWS_EC2_METADATA_SERVICE_ENDPOINT"
DEFAULT_HOOK_NAME: str = Settings.model_fields["ec2_lifecycle_hook_name"].default
DEFAULT_LAUNCH_HOOK_NAME: str = Settings.model_fields["ec2_launch_hook_name"].default
DEFAULT_POLL_S = 5.0
GROUP_TAG = "aws:autoscaling:groupName"
TOKEN_TTL_S = 21600
# A token is renewed this long before it expires, so no read races its end.
TOKEN_MARGIN_S = 60
HTTP_TIMEOUT_S = 2.0
TERMINATING_STATE = "Terminated"
WARM_POOL_PREFIX = "Warmed:"
TERMINATING_REASON = "auto scaling: instance is being terminated"
WARM_POOL_REASON = "auto scaling: instance returns to the warm pool"


class MetadataUnavailable(Exception):
    """The metadata service did not answer usefully (not on EC2, or a blip)."""


class MetadataClient:
    """IMDSv2 reads over an aiohttp session: ``None`` for a 404, text otherwise."""

    def __init__(
        self,
        endpoint: str,
        session: aiohttp.ClientSession,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base = endpoint.rstrip("/") + "/latest"
        self._session = session
        self._clock = clock
        self._token: str | None = None
        self._token_expires = 0.0

    async def _new_token(self) -> str:
        headers = {"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_S)}
        try:
            async with self._session.put(f"{self._base}/api/token", headers=headers) as response:
                if response.status != 200:
                    raise MetadataUnavailable(f"token request answered {response.status}")
                token = await response.text()
        except (aiohttp.ClientError, TimeoutError) as error:
            raise MetadataUnavailable(f"token request failed: {error!r}") from None
        self._token = token
        self._token_expires = self._clock() + TOKEN_TTL_S - TOKEN_MARGIN_S
        return token

    async def _token_now(self) -> str:
        if self._token is None or self._clock() >= self._token_expires:
            return await self._new_token()
        return self._token

    async def get(self, path: str) -> str | None:
        """Read ``/latest/<path>``; ``None`` when it does not exist (404)."""
        for attempt in range(2):
            token = await self._token_now()
            headers = {"X-aws-ec2-metadata-token": token}
            try:
                async with self._session.get(f"{self._base}/{path}", headers=headers) as response:
                    if response.status == 401 and attempt == 0:
                        # The token expired or the service restarted: one new token.
                        self._token = None
                        continue
                    if response.status == 404:
                        return None
                    if response.status != 200:
                        raise MetadataUnavailable(f"{path} answered {response.status}")
                    return await response.text()
            except (aiohttp.ClientError, TimeoutError) as error:
                raise MetadataUnavailable(f"{path} failed: {error!r}") from None
        raise MetadataUnavailable(f"{path} refused a fresh token")


def spot_reason(document: str) -> str:
    """A drain reason from the body of ``spot/instance-action``."""
    try:
        notice = json.loads(document)
    except ValueError:
        return "spot interruption"
    if not isinstance(notice, dict):
        return "spot interruption"
    action = notice.get("action", "terminate")
    when = notice.get("time")
    return f"spot interruption: {action}" + (f" at {when}" if when else "")


class LifecycleWatcher:
    """Waits for a termination or Spot notice, then completes the lifecycle action.

    Use as an async context manager (it owns an HTTP session)::

        async with LifecycleWatcher(region="us-east-1") as watcher:
            reason = await watcher.wait_for_notice()
            ...  # drain
            await watcher.complete()
    """

    def __init__(
        self,
        *,
        region: str,
        endpoint: str = DEFAULT_ENDPOINT,
        group_name: str = "",
        hook_name: str = DEFAULT_HOOK_NAME,
        launch_hook_name: str = DEFAULT_LAUNCH_HOOK_NAME,
        poll_interval_s: float = DEFAULT_POLL_S,
    ) -> None:
        self.region = region
        self.endpoint = endpoint
        self.group_name = group_name
        self.hook_name = hook_name
        self.launch_hook_name = launch_hook_name
        # The hooks whose action complete() tries, in order: set by the notice.
        self.hooks: tuple[str, ...] = (hook_name,)
        self.poll_interval_s = poll_interval_s
        self._session: aiohttp.ClientSession | None = None
        self._metadata: MetadataClient | None = None
        self._unavailable = False

    @classmethod
    def from_settings(cls, settings: Settings) -> LifecycleWatcher:
        """A watcher configured from the service settings and the environment."""
        return cls(
            region=settings.aws_region,
            endpoint=os.environ.get(ENDPOINT_VARIABLE) or DEFAULT_ENDPOINT,
            group_name=settings.ec2_autoscaling_group_name,
            hook_name=settings.ec2_lifecycle_hook_name,
            launch_hook_name=settings.ec2_launch_hook_name,
            poll_interval_s=settings.ec2_lifecycle_poll_s,
        )

    async def __aenter__(self) -> LifecycleWatcher:
        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
        # The metadata service is link-local: never through an HTTP proxy.
        self._session = aiohttp.ClientSession(timeout=timeout, trust_env=False)
        self._metadata = MetadataClient(self.endpoint, self._session)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
        self._session = self._metadata = None

    @property
    def metadata(self) -> MetadataClient:
        """The metadata client (inside ``async with`` only)."""
        if self._metadata is None:
            raise RuntimeError("use LifecycleWatcher inside 'async with'")
        return self._metadata

    async def check(self) -> str | None:
        """One look at the metadata: a drain reason, or ``None`` while all is well."""
        state = (
            await self.metadata.get("meta-data/autoscaling/target-lifecycle-state") or ""
        ).strip()
        if state == TERMINATING_STATE:
            return TERMINATING_REASON
        if state.startswith(WARM_POOL_PREFIX):
            self.hooks = (self.launch_hook_name, self.hook_name)
            return WARM_POOL_REASON
        action = await self.metadata.get("meta-data/spot/instance-action")
        if action:
            return spot_reason(action)
        return None

    async def wait_for_notice(self) -> str:
        """Poll until a notice arrives; the reason to drain.

        An unreachable metadata service is logged once and polled again: a
        blip must not stop the watch, and off EC2 it simply never notices.
        """
        while True:
            try:
                reason = await self.check()
            except MetadataUnavailable as error:
                if not self._unavailable:
                    log.warning("instance_metadata_unavailable", error=str(error))
                self._unavailable = True
            else:
                if self._unavailable:
                    log.info("instance_metadata_available")
                self._unavailable = False
                if reason is not None:
                    log.info("lifecycle_notice", reason=reason)
                    return reason
            await asyncio.sleep(self.poll_interval_s)

    async def _target(self) -> tuple[str, str] | None:
        instance_id = await self.metadata.get("meta-data/instance-id")
        group = self.group_name or await self.metadata.get(f"meta-data/tags/instance/{GROUP_TAG}")
        if not instance_id or not group:
            return None
        return group.strip(), instance_id.strip()

    async def complete(self) -> None:
        """Complete this instance's lifecycle action with ``CONTINUE``.

        The termination hook's; after a return-to-warm-pool notice the launch
        hook's, else the termination hook's. Never raises: when there is no
        action to complete (a Spot interruption outside a hook, a hook already
        timed out) the hook's own default result applies.
        """
        try:
            target = await self._target()
        except MetadataUnavailable as error:
            log.warning("lifecycle_action_not_completed", error=str(error))
            return
        if target is None:
            log.warning(
                "lifecycle_action_not_completed",
                error="instance id or Auto Scaling group name unknown "
                "(set EC2_AUTOSCALING_GROUP_NAME or enable instance metadata tags)",
            )
            return
        group, instance_id = target
        errors = []
        session = make_session(self.region)
        async with session.client("autoscaling", config=client_config()) as autoscaling:
            for hook in self.hooks:
                try:
                    await autoscaling.complete_lifecycle_action(
                        AutoScalingGroupName=group,
                        LifecycleHookName=hook,
                        InstanceId=instance_id,
                        LifecycleActionResult="CONTINUE",
                    )
                except (ClientError, BotoCoreError) as error:
                    errors.append(f"{hook}: {error}")
                    continue
                log.info("lifecycle_action_completed", group=group, hook=hook)
                return
        log.warning("lifecycle_action_not_completed", group=group, error="; ".join(errors))


class Drainable(Protocol):
    """What the watch needs of a worker."""

    def request_drain(self, reason: str) -> None:
        """Stop taking work and wind down."""

    def wait_stopped(self) -> Awaitable[int]:
        """Wait until the worker has stopped."""


Companion = Callable[[Drainable], Coroutine[Any, Any, None]]
"""Runs beside the worker; may call ``worker.request_drain`` and await
``worker.wait_stopped()`` (for example to complete a lifecycle action)."""


async def drain_on_notice(worker: Drainable, watcher: LifecycleWatcher) -> None:
    """Drain `worker` on a notice, then complete the lifecycle action.

    Returns quietly when the worker stops for another reason first.
    """
    async with watcher:
        notice = asyncio.create_task(watcher.wait_for_notice(), name="lifecycle-watch")
        stopped = asyncio.ensure_future(worker.wait_stopped())
        try:
            done, _ = await asyncio.wait({notice, stopped}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            notice.cancel()
            stopped.cancel()
            raise
        if notice not in done:
            notice.cancel()
            return
        worker.request_drain(notice.result())
        await stopped
        await watcher.complete()


def lifecycle_companion(settings: Settings) -> Companion:
    """The companion `illustrator run` starts beside the worker when
    ``EC2_LIFECYCLE_WATCH=true``."""

    async def watch(worker: Drainable) -> None:
        await drain_on_notice(worker, LifecycleWatcher.from_settings(settings))

    return watch
