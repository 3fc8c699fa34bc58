"""The signing tokens a worker holds, re-read when a signature does not verify.

Tokens come from the settings (``AUTH_TOKEN``, ``AUTH_TOKEN_PREVIOUS``), a
token file (``AUTH_TOKEN_FILE``) or a Secrets Manager secret
(``AUTH_TOKEN_SECRET_ID``); see :mod:`consumer.aws.auth_tokens`. The last two
can change while the worker runs: a rotation makes a new current token, and
producers sign with it before this worker has seen it. So a signature that
verifies with none of the held tokens makes the worker read its source again,
at most once every :data:`REREAD_INTERVAL_S`, before the request is called
``unauthorized``. A token rotated out of the source stops verifying at the
next re-read.

A re-read that fails keeps the held tokens. When Secrets Manager is out it is
an outage (the request is released and costs no attempt, the worker pauses);
any other failure is transient (the request is retried later): in neither
case was the request shown to be forged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from consumer.aws.auth_tokens import Tokens, read_secret, read_token_file
from consumer.aws.clients import AwsClients
from consumer.classify import classify, is_outage
from consumer.clock import Clock
from consumer.contract.signing import verify
from consumer.delivery.outage import Outages, Service, ServiceOut
from consumer.errors import ConfigError, TransientError, Unauthorized
from consumer.logs import scrub_also
from consumer.settings import Settings

log = structlog.get_logger(__name__)

REREAD_INTERVAL_S = 30.0
Reader = Callable[[], Awaitable[Tokens]]


class SigningKeys:
    """Held tokens and the way to read them again (`reader`; ``None``: fixed).

    Args:
        tokens: the tokens read at start ("" before :meth:`load`).
        reader: reads the source again.
        clock: paces the re-reads.
        outages: where an outage of Secrets Manager is reported.
    """

    def __init__(
        self,
        tokens: Tokens,
        reader: Reader | None,
        clock: Clock,
        outages: Outages | None = None,
    ) -> None:
        self.tokens = tokens
        self._reader = reader
        self._clock = clock
        self._outages = outages
        self._read_at: float | None = None
        self._lock = asyncio.Lock()
        self.rereads = 0

    async def verify(self, body: bytes, signature: str | None) -> None:
        """Return if `signature` is right for `body` with a held token, or with
        one read again now; raise :class:`Unauthorized` otherwise."""
        held = self.tokens
        try:
            verify(body, signature, *held.accepted())
            return
        except Unauthorized:
            if not signature or not await self._reread(held):
                raise
        verify(body, signature, *self.tokens.accepted())

    async def load(self) -> None:
        """Read the source for the first time (Secrets Manager at start)."""
        if self._reader is not None:
            self._adopt(await self._reader())

    async def _reread(self, held: Tokens) -> bool:
        """Read the tokens again unless that was done in the last interval;
        whether the tokens may have changed since `held` was taken."""
        if self._reader is None:
            return False
        async with self._lock:
            if self.tokens != held:  # another job re-read them meanwhile
                return True
            now = self._clock.monotonic()
            if self._read_at is not None and now - self._read_at < REREAD_INTERVAL_S:
                return False
            self._read_at = now
            self.rereads += 1
            try:
                tokens = await self._reader()
            except Exception as error:
                raise self._failed(error) from error
            changed = tokens != self.tokens
            self._adopt(tokens)
            log.info("signing_keys_reread", changed=changed)
            return changed

    def _failed(self, error: Exception) -> Exception:
        """What a failed re-read means for the request: never ``unauthorized``."""
        reason = classify(error).message
        log.warning("signing_keys_not_reread", error=reason, note="the held tokens are kept")
        if is_outage(error) and self._outages is not None:
            self._outages.mark(Service.SECRETS, error)
            return ServiceOut(Service.SECRETS, error)
        return TransientError(f"the signing tokens could not be read again: {reason}")

    def _adopt(self, tokens: Tokens) -> None:
        scrub_also(tokens.accepted())
        self.tokens = tokens


def signing_keys(
    settings: Settings, clients: AwsClients, clock: Clock, outages: Outages | None
) -> SigningKeys:
    """The keys `settings` name: a secret (read by :meth:`SigningKeys.load`),
    a file (read now; :class:`ConfigError` when it cannot be), or the settings."""
    if settings.auth_token_secret_id and clients.secrets is not None:
        client, secret_id = clients.secrets, settings.auth_token_secret_id

        async def from_secret() -> Tokens:
            return await read_secret(client, secret_id)

        return SigningKeys(Tokens(""), from_secret, clock, outages)
    if settings.auth_token_file:
        path = settings.auth_token_file

        async def from_file() -> Tokens:
            return await asyncio.to_thread(read_token_file, path)

        return SigningKeys(read_token_file(path), from_file, clock, outages)
    return SigningKeys(settings_tokens(settings), None, clock, outages)


def settings_tokens(settings: Settings) -> Tokens:
    """The tokens set directly (``AUTH_TOKEN``, ``AUTH_TOKEN_PREVIOUS``), for local use."""
    return Tokens(
        settings.auth_token.get_secret_value(), settings.auth_token_previous.get_secret_value()
    )


async def load_until_read(keys: SigningKeys, outages: Outages) -> str | None:
    """Read the keys at start, waiting out an outage of Secrets Manager;
    ``None`` once read, else why they cannot be (the worker cannot run)."""
    while True:
        try:
            await keys.load()
        except ConfigError as error:
            return error.message
        except Exception as error:
            if not is_outage(error):
                return f"AUTH_TOKEN_SECRET_ID cannot be read: {classify(error).message}"
            await outages.wait_out(Service.SECRETS, error)
            continue
        return None
