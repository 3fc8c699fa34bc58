"""structlog set-up: one stream of JSON lines by default, console for people, no secrets.

Context is bound with :func:`structlog.contextvars.bind_contextvars` once per
job (``job_id``, ``user_id``) and reaches the GPU thread because
``asyncio.to_thread`` copies context variables.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import sys
from collections.abc import Iterable, MutableMapping
from types import TracebackType
from typing import Any, TextIO, cast

import structlog
from structlog.typing import EventDict

REDACTED = "[redacted]"
_SECRET_KEY = re.compile(r"token|secret|password|passwd|credential|authorization|api_key", re.I)
_SECRET_ENV = ("AUTH_TOKEN", "AUTH_TOKEN_PREVIOUS", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


class SecretScrubber:
    """A structlog processor that removes secrets by key name and by value.

    Values are scrubbed wherever they appear (also inside messages and
    exception text), so a token pasted into an error still never reaches the
    log. Values of other types (exceptions, bytes, objects whose repr holds a
    secret) are caught by :meth:`scrub_text` on the rendered line.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Scrub `secrets` too from now on (tokens read after start-up)."""
        # Very short values would match too much ordinary text to be useful.
        values = {s for s in secrets if len(s) >= 4}
        # A renderer may escape a secret (JSON, repr): match those forms too.
        escaped = {json.dumps(s)[1:-1] for s in values} | {repr(s)[1:-1] for s in values}
        self._secrets = sorted(set(self._secrets) | values | escaped, key=len, reverse=True)

    def scrub_text(self, text: str) -> str:
        """`text` with every known secret replaced by :data:`REDACTED`."""
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub_text(value)
        if isinstance(value, dict):
            return {k: self._field(k, v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(v) for v in value]
        return value

    def _field(self, key: object, value: Any) -> Any:
        if isinstance(key, str) and _SECRET_KEY.search(key) and value:
            return REDACTED
        return self._clean(value)

    def __call__(
        self, logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """Scrub one event in place and return it."""
        for key in list(event_dict):
            event_dict[key] = self._field(key, event_dict[key])
        return event_dict


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the moment of writing.

    Loggers bound once (at import, or for the life of a job) would otherwise
    keep the stream that existed when logging was configured, which breaks
    when it is later replaced (pytest's capture, a daemonised process).
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class _ScrubbedRenderer:
    """The last processor: renders the line, then scrubs the whole of it."""

    def __init__(self, renderer: Any, scrubber: SecretScrubber) -> None:
        self._renderer = renderer
        self._scrubber = scrubber

    def __call__(self, logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> str:
        return self._scrubber.scrub_text(str(self._renderer(logger, method, event_dict)))


# The scrubber of the current configuration, so secrets read later join it.
_active: list[SecretScrubber] = []


def scrub_also(secrets: Iterable[str]) -> None:
    """Keep `secrets` (such as tokens re-read from Secrets Manager) out of the logs."""
    for scrubber in _active:
        scrubber.add(secrets)


def environment_secrets(extra: Iterable[str] = ()) -> list[str]:
    """The secret values known from the environment, plus `extra`."""
    return [v for v in (*(os.environ.get(n, "") for n in _SECRET_ENV), *extra) if v]


# Libraries that install their own stream handler and stop propagation
# (transformers, diffusers): their lines would bypass the JSON renderer.
SELF_HANDLED_LOGGERS = ("transformers", "diffusers")


def adopt_library_loggers(*, load: bool = False) -> None:
    """Route the self-handled libraries' loggers through the root handler.

    Their own handlers are removed and propagation is turned back on, by
    logger name, so nothing here imports them. Called by
    :func:`configure_logging`, and again once the model is loaded, because a
    library imported later installs its handler on first use. With `load`
    (just before a model that needs them is loaded, when their import is
    about to happen anyway) their logging modules are imported first, so
    that the load's own lines are already in the stream.
    """
    if load:
        for name in SELF_HANDLED_LOGGERS:
            try:
                importlib.import_module(f"{name}.utils.logging")
            except ImportError:
                continue
    for name in SELF_HANDLED_LOGGERS:
        library = logging.getLogger(name)
        for handler in library.handlers[:]:
            library.removeHandler(handler)
        library.propagate = True


def _add_logger_name(logger: Any, method: str, event_dict: EventDict) -> EventDict:
    record = event_dict.get("_record")
    if isinstance(record, logging.LogRecord):
        event_dict.setdefault("logger", record.name)
        if record.name == "py.warnings":
            # warnings.formatwarning ends with the source line; one line will do.
            event_dict["event"] = str(event_dict.get("event", "")).strip().splitlines()[0]
    return event_dict


def _uncaught(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, tb)
        return
    structlog.get_logger("consumer").critical("uncaught_exception", exc_info=(kind, error, tb))


def configure_logging(level: str = "info", fmt: str = "json", secrets: Iterable[str] = ()) -> None:
    """Configure structlog and the standard library's logging into one stream.

    Every record, whether from structlog, the standard library (botocore,
    aiohttp), the self-handled libraries or Python's warnings, goes through
    the same processors, the scrubber and the same renderer: with
    ``fmt="json"`` each line on stderr is one JSON object.
    """
    numeric = logging.getLevelNamesMapping()[level.upper()]
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    scrubber = SecretScrubber(environment_secrets(secrets))
    _active[:] = [scrubber]
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # Exceptions become text before scrubbing, so their messages are
        # scrubbed too.
        structlog.processors.format_exc_info,
        scrubber,
    ]
    final = _ScrubbedRenderer(renderer, scrubber)
    structlog.configure(
        processors=[*shared, final],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, _CurrentStderr())),
        cache_logger_on_first_use=False,
    )
    # Libraries (botocore, aiohttp) log through the standard library; keep
    # them quiet unless asked, on the same stream and in the same format.
    handler = logging.StreamHandler(cast(TextIO, _CurrentStderr()))
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[_add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, final],
        )
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), handlers=[handler], force=True)
    adopt_library_loggers()
    # Off then on: a second configuration captures afresh, not twice.
    logging.captureWarnings(False)
    logging.captureWarnings(True)
    # A crash's traceback becomes one scrubbed line rather than raw text.
    sys.excepthook = _uncaught
