"""Logging: JSON lines, job context, and no secrets."""

from __future__ import annotations

import json

import pytest
import structlog

from consumer.logs import REDACTED, configure_logging


def lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]


def test_json_lines_carry_bound_job_context(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")
    structlog.contextvars.bind_contextvars(job_id="m-1", user_id="u-1")
    try:
        structlog.get_logger().info("job.started", steps=3)
        structlog.get_logger().debug("hidden")
    finally:
        structlog.contextvars.clear_contextvars()
    (record,) = lines(capsys)
    assert record["event"] == "job.started"
    assert (record["job_id"], record["user_id"], record["steps"]) == ("m-1", "u-1", 3)
    assert record["level"] == "info"


def test_secrets_never_reach_the_log(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTH_TOKEN", "hunter2-token-value")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-secret")
    configure_logging("debug", "json")
    log = structlog.get_logger()
    log.info("settings", auth_token="hunter2-token-value", nested={"password": "p4ss-word"})
    log.info("echo hunter2-token-value and wJalrXUtnFEMI-secret")
    try:
        raise RuntimeError("bad token hunter2-token-value")
    except RuntimeError:
        log.exception("failed")
    out = capsys.readouterr().err
    assert "hunter2-token-value" not in out
    assert "wJalrXUtnFEMI-secret" not in out
    assert "p4ss-word" not in out
    assert out.count(REDACTED) >= 5


def test_console_format_is_readable(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "console")
    structlog.get_logger().info("hello", job_id="j")
    err = capsys.readouterr().err
    assert "hello" in err
    assert "job_id" in err
    with pytest.raises(json.JSONDecodeError):
        json.loads(err.splitlines()[0])


def test_standard_library_records_are_printed_and_scrubbed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-secret")
    configure_logging("info", "json")
    logging.getLogger("botocore").warning("credential %s rejected", "wJalrXUtnFEMI-secret")
    structlog.get_logger().warning("retry", error=RuntimeError("no wJalrXUtnFEMI-secret"))
    err = capsys.readouterr().err
    assert f"botocore credential {REDACTED} rejected" in err
    assert f"RuntimeError('no {REDACTED}')" in err
    assert "wJalrXUtnFEMI-secret" not in err
