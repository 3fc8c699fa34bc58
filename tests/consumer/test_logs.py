"""Logging: JSON lines, job context, and no secrets."""

from __future__ import annotations

import json

import pytest
import structlog

from consumer.logs import REDACTED, adopt_library_loggers, configure_logging


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


def test_standard_library_records_are_json_and_scrubbed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-secret")
    configure_logging("info", "json")
    logging.getLogger("botocore").warning("credential %s rejected", "wJalrXUtnFEMI-secret")
    structlog.get_logger().warning("retry", error=RuntimeError("no wJalrXUtnFEMI-secret"))
    botocore, retry = lines(capsys)
    assert botocore["event"] == f"credential {REDACTED} rejected"
    assert (botocore["logger"], botocore["level"]) == ("botocore", "warning")
    assert "timestamp" in botocore
    assert retry["error"] == f"RuntimeError('no {REDACTED}')"


def test_library_loggers_with_their_own_handler_are_adopted() -> None:
    import logging

    library = logging.getLogger("diffusers")
    own = logging.StreamHandler()
    library.addHandler(own)
    library.propagate = False
    try:
        adopt_library_loggers()
        assert own not in library.handlers
        assert library.propagate is True
    finally:
        library.removeHandler(own)
        library.propagate = True


SECRET = "wJalrXUtnFEMI-planted-secret"
PROMPT = "a lighthouse at dusk with my grandmother"
# Each route by which a line reaches stderr in a running consumer, each
# carrying the secret; run in a fresh interpreter so nothing of pytest's
# (its warning capture, its handlers) stands between the routes and stderr.
ROUTES = f"""
import logging, warnings
import structlog
from consumer.logs import configure_logging
noisy = logging.getLogger("transformers")
noisy.addHandler(logging.StreamHandler())
noisy.propagate = False
configure_logging("info", "json")
structlog.get_logger().info("structlog {SECRET}", job_id="m-1")
logging.getLogger("aiohttp.access").warning("stdlib %s", "{SECRET}")
logging.getLogger("botocore.credentials").error("botocore {SECRET}")
logging.getLogger("transformers.modeling_utils").warning("transformers {SECRET}")
late = logging.getLogger("diffusers")
late.addHandler(logging.StreamHandler())
late.propagate = False
from consumer.logs import adopt_library_loggers
adopt_library_loggers()
logging.getLogger("diffusers.models").warning("diffusers {SECRET}")
warnings.warn("warning {SECRET}", UserWarning)
raise RuntimeError("uncaught {SECRET}")
"""


def test_every_line_of_every_route_is_scrubbed_json() -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "AUTH_TOKEN": SECRET}
    done = subprocess.run(
        [sys.executable, "-c", ROUTES],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    records = [json.loads(line) for line in done.stderr.splitlines()]
    events = [str(r["event"]) for r in records]
    assert [e.split()[0] for e in events[:5]] == [
        "structlog",
        "stdlib",
        "botocore",
        "transformers",
        "diffusers",
    ]
    assert events[5].endswith(f"UserWarning: warning {REDACTED}")
    assert events[6] == "uncaught_exception"
    assert SECRET not in done.stderr
    assert done.stderr.count(REDACTED) == 7
    assert records[-1]["level"] == "critical"
    assert f"RuntimeError: uncaught {REDACTED}" in str(records[-1]["exception"])
    assert records[5]["logger"] == "py.warnings"


LOAD = """
from consumer.logs import adopt_library_loggers, configure_logging
configure_logging("info", "json")
adopt_library_loggers(load=True)
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging
transformers_logging.get_logger("transformers.modeling_utils").warning("during the load")
diffusers_logging.get_logger("diffusers.pipelines").warning("during the load")
"""


def test_lines_logged_during_a_model_load_are_json() -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", LOAD],
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    records = [json.loads(line) for line in done.stderr.splitlines()]
    assert [r["logger"] for r in records] == ["transformers.modeling_utils", "diffusers.pipelines"]
