"""The sidecar shows nothing sensitive, also while the worker is in trouble.

Its answers are read by orchestrators and dashboards that are not trusted
with credentials: they must carry neither the AUTH_TOKEN nor the AWS secret
key, nor the queue URL or account the worker uses, whatever state it is in.
"""

from __future__ import annotations

import aiohttp

from consumer.service.sidecar import Sidecar
from tests.chaos.proxy import Fault, Rule
from tests.reliability.harness import Rig, rig, rig_settings
from tests.support.aws import FAKE_CREDENTIALS, Stack
from tests.support.helpers import eventually
from tests.support.helpers import memory as memory_request

TOKEN = "sidecar-test-token-8e21"
PATHS = ("/health", "/health/", "/livez", "/readyz", "/metrics")


async def answers(r: Rig) -> dict[str, tuple[int, str]]:
    sidecar = Sidecar(r.worker.board, r.worker.metrics, "127.0.0.1", 0)
    await sidecar.start()
    try:
        async with aiohttp.ClientSession() as session:
            found = {}
            for path in PATHS:
                async with session.get(sidecar.url + path) as response:
                    found[path] = (response.status, await response.text())
            return found
    finally:
        await sidecar.stop()


def assert_nothing_sensitive(stack: Stack, found: dict[str, tuple[int, str]]) -> None:
    for path, (_, body) in found.items():
        for secret in (TOKEN, FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]):
            assert secret not in body, path
        for detail in (stack.queue_url, stack.dlq_url, stack.topic_arn, "123456789012"):
            assert detail not in body, (path, detail)


async def test_the_sidecar_shows_no_secret_when_healthy_or_refused(
    stack: Stack, moto_endpoint: str
) -> None:
    settings = rig_settings(auth_enabled=True, auth_token=TOKEN)
    async with rig(stack, moto_endpoint, settings=settings) as r:
        await r.put_input()
        await r.send(memory_request("unsigned"))  # fails as unauthorized
        await r.wait_events(1)
        healthy = await answers(r)
        assert healthy["/health"][0] == 200
        assert_nothing_sensitive(stack, healthy)

        r.proxy.add(Rule(Fault.DENY))
        await eventually(
            lambda: r.worker.board.health().body["status"] == "unhealthy",
            what="the refusal to show",
        )
        troubled = await answers(r)
        assert troubled["/health"][0] == 503
        assert "InvalidClientTokenId" in troubled["/health"][1]
        assert_nothing_sensitive(stack, troubled)
