"""Signing tokens: the token file's rules, and re-reading on a bad signature."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from consumer.aws.auth_tokens import Tokens, read_token_file
from consumer.contract.signing import sign
from consumer.delivery.outage import Outages, Service, ServiceOut
from consumer.delivery.signing_keys import REREAD_INTERVAL_S, SigningKeys
from consumer.errors import ConfigError, TransientError, Unauthorized
from consumer.metrics import Metrics
from tests.support.fakes import FakeClock

BODY = b'{"job_id": "j1"}'


def _file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "tokens"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_the_file_holds_the_current_then_the_previous_token(tmp_path: Path) -> None:
    assert read_token_file(str(_file(tmp_path, "new\nold\n"))) == Tokens("new", "old")
    assert read_token_file(str(_file(tmp_path, "only\n"))) == Tokens("only", "")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_a_file_others_may_read_or_change_is_refused(tmp_path: Path, mode: int) -> None:
    with pytest.raises(ConfigError, match=r"AUTH_TOKEN_FILE=.*make it 0600"):
        read_token_file(str(_file(tmp_path, "new\n", mode)))


def test_a_missing_empty_or_unreadable_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"AUTH_TOKEN_FILE=.*cannot be read"):
        read_token_file(str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="first line"):
        read_token_file(str(_file(tmp_path, "\nold\n")))
    with pytest.raises(ConfigError, match=r"AUTH_TOKEN_FILE=.*(not a regular file|directory)"):
        read_token_file(str(tmp_path))
    if os.geteuid() != 0:  # root reads any file
        with pytest.raises(ConfigError, match="cannot be read"):
            read_token_file(str(_file(tmp_path, "new\n", 0o000)))


class Source:
    """Tokens that change when told; counts reads; can fail."""

    def __init__(self, tokens: Tokens) -> None:
        self.tokens = tokens
        self.reads = 0
        self.error: Exception | None = None

    async def __call__(self) -> Tokens:
        self.reads += 1
        if self.error is not None:
            raise self.error
        return self.tokens


def _keys(source: Source, clock: FakeClock) -> tuple[SigningKeys, Outages]:
    outages = Outages(clock, Metrics())
    return SigningKeys(source.tokens, source, clock, outages), outages


async def test_a_rotated_token_verifies_after_one_reread() -> None:
    clock, source = FakeClock(), Source(Tokens("t1"))
    keys, _ = _keys(source, clock)
    await keys.verify(BODY, sign(BODY, "t1"))
    assert source.reads == 0  # a good signature costs no read
    source.tokens = Tokens("t2", "t1")
    await keys.verify(BODY, sign(BODY, "t2"))
    assert source.reads == 1
    await keys.verify(BODY, sign(BODY, "t1"))  # still AWSPREVIOUS
    assert source.reads == 1


async def test_rereads_are_at_most_one_every_thirty_seconds() -> None:
    clock, source = FakeClock(), Source(Tokens("t1"))
    keys, _ = _keys(source, clock)
    for _ in range(5):
        with pytest.raises(Unauthorized):
            await keys.verify(BODY, sign(BODY, "forged"))
    assert source.reads == 1
    clock.advance(REREAD_INTERVAL_S - 0.1)
    with pytest.raises(Unauthorized):
        await keys.verify(BODY, sign(BODY, "forged"))
    assert source.reads == 1
    clock.advance(0.2)
    with pytest.raises(Unauthorized):
        await keys.verify(BODY, sign(BODY, "forged"))
    assert source.reads == 2


async def test_a_token_rotated_out_stops_verifying_within_one_reread() -> None:
    clock, source = FakeClock(), Source(Tokens("t2", "t1"))
    keys, _ = _keys(source, clock)
    await keys.verify(BODY, sign(BODY, "t1"))
    source.tokens = Tokens("t3", "t2")  # the next rotation drops t1
    with pytest.raises(Unauthorized):
        await keys.verify(BODY, sign(BODY, "t0"))
    assert keys.tokens == Tokens("t3", "t2")
    with pytest.raises(Unauthorized):
        await keys.verify(BODY, sign(BODY, "t1"))


async def test_an_outage_at_reread_keeps_the_tokens_and_is_an_outage() -> None:
    clock, source = FakeClock(), Source(Tokens("t1"))
    keys, outages = _keys(source, clock)
    source.error = EndpointConnectionError(endpoint_url="https://secretsmanager")
    with pytest.raises(ServiceOut) as out:
        await keys.verify(BODY, sign(BODY, "t2"))
    assert out.value.service is Service.SECRETS
    assert outages.is_out(Service.SECRETS)
    assert keys.tokens == Tokens("t1")
    await keys.verify(BODY, sign(BODY, "t1"))
    outages.close()


async def test_a_refused_reread_is_transient_never_unauthorized() -> None:
    clock, source = FakeClock(), Source(Tokens("t1"))
    keys, outages = _keys(source, clock)
    source.error = ClientError({"Error": {"Code": "AccessDeniedException"}}, "GetSecretValue")
    with pytest.raises(TransientError):
        await keys.verify(BODY, sign(BODY, "t2"))
    assert not outages.is_out(Service.SECRETS)
    assert keys.tokens == Tokens("t1")


async def test_fixed_tokens_are_never_reread() -> None:
    keys = SigningKeys(Tokens("t1", "t0"), None, FakeClock())
    await keys.verify(BODY, sign(BODY, "t0"))
    with pytest.raises(Unauthorized):
        await keys.verify(BODY, sign(BODY, "t2"))
    with pytest.raises(Unauthorized):
        await keys.verify(BODY, None)
