"""The health sidecar (contract section 5), served by aiohttp in the worker's loop.

It only reads the :class:`~consumer.state.StatusBoard` and the metrics
registry: it never touches the GPU, the queue or any secret, so answering it
costs nothing and shows nothing sensitive. Because it shares the event loop
with the worker, an answer at all means the loop is not blocked.
"""

from __future__ import annotations

import ipaddress
import os

from aiohttp import web

from consumer.delivery.worker_state import HealthReport, StatusBoard
from consumer.errors import ConfigError
from consumer.metrics import CONTENT_TYPE, Metrics


def _reachable(host: str) -> str:
    # A wildcard address is listened on, not connected to.
    try:
        unspecified = not host or ipaddress.ip_address(host).is_unspecified
    except ValueError:
        unspecified = False
    return "127.0.0.1" if unspecified else host


def _json(report: HealthReport) -> web.Response:
    # Health answers must never be cached by a proxy in between.
    return web.json_response(
        report.body, status=report.status_code, headers={"Cache-Control": "no-store"}
    )


def make_app(board: StatusBoard, metrics: Metrics) -> web.Application:
    """The sidecar's routes: /health, /health/, /livez, /readyz, /metrics."""

    async def health(_: web.Request) -> web.Response:
        return _json(board.health())

    async def livez(_: web.Request) -> web.Response:
        return _json(board.probe(board.live))

    async def readyz(_: web.Request) -> web.Response:
        return _json(board.probe(board.ready))

    async def prometheus(_: web.Request) -> web.Response:
        # CONTENT_TYPE carries a charset parameter, which aiohttp wants as a header.
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/health/", health)
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", prometheus)
    return app


class Sidecar:
    """Start and stop the HTTP server on `host`:`port` (port 0 picks a free one)."""

    def __init__(self, board: StatusBoard, metrics: Metrics, host: str, port: int) -> None:
        self._runner = web.AppRunner(
            make_app(board, metrics), access_log=None, shutdown_timeout=1.0
        )
        self._host = host
        self._port = port
        self.port: int | None = None

    async def start(self) -> int:
        """Listen; return the port actually bound.

        Raises :class:`ConfigError` naming ``HEALTH_PORT`` when the address
        cannot be bound (in use, not permitted, not an address of this host).
        """
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self._host, self._port).start()
        except OSError as error:
            await self._runner.cleanup()
            # aiohttp's text repeats the address; the errno's own words do not.
            reason = os.strerror(error.errno).lower() if error.errno else str(error)
            raise ConfigError(
                f"HEALTH_PORT={self._port}: cannot listen on {self._host}:{self._port}: {reason}"
            ) from None
        self.port = int(self._runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        await self._runner.cleanup()

    @property
    def url(self) -> str:
        """The base URL, for logs and tests."""
        return f"http://{_reachable(self._host)}:{self.port}"
