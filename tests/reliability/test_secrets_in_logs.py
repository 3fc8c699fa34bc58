"""No secret (AUTH_TOKEN, the AWS secret key) reaches the logs, whatever carries it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import structlog

from consumer.logs import REDACTED, configure_logging
from consumer.settings import Settings

TOKEN = "hunter2-auth-token-6c1d"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCY-secret"
SESSION_TOKEN = "FwoGZXIvYXdzEJr-session-token"
SECRETS = (TOKEN, AWS_SECRET, SESSION_TOKEN)


class Leaky:
    """An object whose repr embeds a secret, as many client objects' reprs do."""

    def __repr__(self) -> str:
        return f"Leaky(token={TOKEN})"


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> Logger:
    """A logger configured with the secrets in the environment (the autouse
    fixture in ``tests/conftest.py`` restores logging afterwards)."""
    monkeypatch.setenv("AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    return Logger()


class Logger:
    """Configures logging on first use, inside the test call."""

    def __getattr__(self, name: str) -> Any:
        configure_logging("debug", "json")
        return getattr(structlog.get_logger(), name)


def assert_clean(output: str) -> None:
    assert output, "the call logged nothing, so the test proves nothing"
    for secret in SECRETS:
        assert secret not in output


def _raise_and_log(log: Any, error: BaseException) -> None:
    try:
        raise error
    except BaseException:
        log.exception("job.failed")


def _in_context(log: Any) -> None:
    structlog.contextvars.bind_contextvars(note=SESSION_TOKEN)
    log.info("ctx")


def _through_stdlib(log: Any) -> None:
    log.debug("configured")  # the first use configures logging
    logging.getLogger("botocore").warning("credential %s rejected", AWS_SECRET)


def _chained(log: Any) -> None:
    try:
        try:
            raise KeyError(f"lookup of {AWS_SECRET}")
        except KeyError as inner:
            raise RuntimeError("outer failure") from inner
    except RuntimeError:
        log.error("job.failed", exc_info=True)


SCRUBBED: dict[str, Callable[[Any], None]] = {
    "in the event text": lambda log: log.info(f"token is {TOKEN}"),
    "as a field value": lambda log: log.info("auth", value=TOKEN),
    "inside a longer string": lambda log: log.info("url", url=f"https://x/?sig={TOKEN}&a=1"),
    "nested in dicts and lists": lambda log: log.info("n", a={"b": [{"c": (1, AWS_SECRET)}]}),
    "in bound context": lambda log: log.bind(header=f"Bearer {TOKEN}").warning("request"),
    "in contextvars": lambda log: _in_context(log),
    "in an exception message": lambda log: _raise_and_log(log, ValueError(f"bad {TOKEN}")),
    "in a chained exception": _chained,
    "in exc_info given as an object": lambda log: log.info("x", exc_info=OSError(AWS_SECRET)),
    "in the settings dump": lambda log: log.info("settings", settings=Settings().model_dump()),
}

# Values the field scrubber does not walk: caught on the rendered line, and in
# the standard library's records.
OPAQUE: dict[str, Callable[[Any], None]] = {
    "in an exception object as a field": lambda log: log.warning(
        "retry", error=RuntimeError(f"denied for {TOKEN}")
    ),
    "in bytes": lambda log: log.info("body", body=f'{{"t": "{TOKEN}"}}'.encode()),
    "in a set": lambda log: log.info("s", items={TOKEN}),
    "in an object's repr": lambda log: log.info("client", client=Leaky()),
    "through the standard library's logging": lambda log: _through_stdlib(log),
}


@pytest.mark.parametrize("emit", SCRUBBED.values(), ids=SCRUBBED.keys())
def test_secrets_are_scrubbed(
    log: Any, emit: Callable[[Any], None], capsys: pytest.CaptureFixture[str]
) -> None:
    emit(log)
    output = capsys.readouterr().err
    assert_clean(output)


@pytest.mark.parametrize("emit", OPAQUE.values(), ids=OPAQUE.keys())
def test_secrets_are_scrubbed_from_any_value(
    log: Any, emit: Callable[[Any], None], capsys: pytest.CaptureFixture[str]
) -> None:
    emit(log)
    assert_clean(capsys.readouterr().err)


def test_redaction_is_visible(log: Any, capsys: pytest.CaptureFixture[str]) -> None:
    log.info("auth", value=TOKEN, auth_token="x" * 8)
    output = capsys.readouterr().err
    assert output.count(REDACTED) == 2


def test_values_under_secret_sounding_keys_are_redacted(
    log: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    unknown = {"password": "p4ss-w0rd", "api_key": "k-123456", "authorization": "Basic YWxhZGRpbg"}
    log.info("config", **unknown, headers={"Authorization": "AWS4-HMAC-SHA256 Credential=x"})
    output = capsys.readouterr().err
    for value in (*unknown.values(), "AWS4-HMAC-SHA256"):
        assert value not in output


def test_settings_never_show_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_ENABLED", "true")
    monkeypatch.setenv("AUTH_TOKEN", TOKEN)
    settings = Settings()
    assert settings.auth_token.get_secret_value() == TOKEN
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert TOKEN not in shown
