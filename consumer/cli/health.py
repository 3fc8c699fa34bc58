"""`illustrator health`: ask the sidecar whether the consumer is healthy.

Exit status 0 when it answers 200 with ``"status": "healthy"`` (``/health``)
or ``"ok"`` (``/livez``, ``/readyz``), else 1 (also when it cannot be reached
or the configuration is unreadable): the container HEALTHCHECK treats any
other status as reserved. ``--live`` asks ``/livez`` instead of ``/health``:
whether the process should be left running. That is the container's health
check, since ``/health`` is 503 while a worker is paused by an AWS outage or
draining, and neither is a reason to replace it.
"""

from __future__ import annotations

import argparse

HELP = "exit 0 if the health sidecar reports healthy, else 1 (for HEALTHCHECK and scripts)"
EXIT_UNHEALTHY = 1
DEFAULT_TIMEOUT_S = 3.0
# The body's "status" of a good answer: /health's, and /livez's or /readyz's.
GOOD = frozenset({"healthy", "ok"})


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's options."""
    parser.add_argument(
        "--url", help="the health URL (default http://127.0.0.1:$HEALTH_PORT/health)"
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help="ask /livez instead: 0 unless the worker is hung or failed, paused or "
        "draining included (the container HEALTHCHECK)",
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S", help="seconds (default 3)"
    )


def _is_wildcard(host: str) -> bool:
    import ipaddress

    try:
        return not host or ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def default_url(host: str, port: int, path: str = "/health") -> str:
    """The sidecar's URL for `path` as seen from the same host or container."""
    if _is_wildcard(host):
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}{path}"


def probe(url: str, timeout_s: float) -> tuple[bool, str]:
    """Ask `url`; whether it answers 200 and healthy (or ok), and a one-line description."""
    import json
    import urllib.error
    import urllib.request

    if not url.startswith(("http://", "https://")):
        return False, f"not an http(s) URL: {url}"
    # The scheme is checked above, so no file: or custom URL is ever opened.
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 # nosec B310
            status, raw = response.status, response.read(65536)
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read(65536)
    except (OSError, ValueError) as error:
        return False, f"unreachable: {error}"
    try:
        body = json.loads(raw)
        state = str(body.get("status", "?")) if isinstance(body, dict) else "?"
    except ValueError:
        state = "unreadable answer"
    return status == 200 and state in GOOD, f"{status} {state}"


def main(args: argparse.Namespace) -> int:
    """Probe the sidecar and exit 0 (healthy) or 1."""
    import sys

    from consumer.errors import ConfigError
    from consumer.settings import load_settings

    url = args.url
    if url is None:
        try:
            settings = load_settings()
        except ConfigError as error:
            print(f"illustrator health: {error.message}", file=sys.stderr)
            return EXIT_UNHEALTHY
        path = "/livez" if args.live else "/health"
        url = default_url(settings.health_host, settings.health_port, path)
    healthy, description = probe(url, args.timeout)
    print(f"{url}: {description}")
    return 0 if healthy else EXIT_UNHEALTHY
