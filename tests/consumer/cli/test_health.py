"""`illustrator health` against a stand-in sidecar on loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from consumer.cli import main as cli
from consumer.cli.health import default_url

Answer = tuple[int, str]


@pytest.fixture
async def sidecar() -> AsyncIterator[tuple[str, list[Answer]]]:
    """A server whose /health answers with the last (status, body) put in the list."""
    answers: list[Answer] = [(200, '{"status": "healthy", "message": "ready"}')]

    async def health(_: web.Request) -> web.Response:
        status, body = answers[-1]
        return web.Response(status=status, text=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", answers
    await runner.cleanup()


async def _health(*argv: str) -> int:
    return await asyncio.to_thread(cli.main, ["health", *argv])


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ((200, '{"status": "healthy", "message": "Image generation service is ready"}'), 0),
        ((503, '{"status": "starting"}'), 1),
        ((503, '{"status": "draining"}'), 1),
        ((503, '{"status": "unhealthy"}'), 1),
        ((200, '{"status": "starting"}'), 1),
        ((200, "not json"), 1),
        ((500, "oops"), 1),
    ],
)
async def test_exit_status_follows_the_sidecar(
    sidecar: tuple[str, list[Answer]],
    answer: Answer,
    expected: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, answers = sidecar
    answers.append(answer)

    assert await _health("--url", f"{url}/health") == expected
    assert str(answer[0]) in capsys.readouterr().out


async def test_default_url_uses_health_port(
    sidecar: tuple[str, list[Answer]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, answers = sidecar
    monkeypatch.setenv("HEALTH_PORT", url.rsplit(":", 1)[1])

    assert await _health() == 0
    answers.append((503, '{"status": "draining"}'))
    assert await _health() == 1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_sidecar_is_unhealthy(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{_free_port()}/health"

    assert cli.main(["health", "--url", url, "--timeout", "1"]) == 1
    assert "unreachable" in capsys.readouterr().out


def test_unreadable_configuration_is_unhealthy_not_status_2(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HEALTH_PORT", "not-a-port")

    assert cli.main(["health"]) == 1


def test_default_url_for_wildcard_and_specific_hosts() -> None:
    assert default_url("0.0.0.0", 8080) == "http://127.0.0.1:8080/health"
    assert default_url("::", 9000) == "http://127.0.0.1:9000/health"
    assert default_url("10.0.0.5", 8080) == "http://10.0.0.5:8080/health"
    assert default_url("fd00::1", 8080) == "http://[fd00::1]:8080/health"
