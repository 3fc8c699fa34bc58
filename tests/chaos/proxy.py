"""A fault-injecting HTTP proxy on loopback, in front of moto's server.

Clients point ``AWS_ENDPOINT_URL`` at the proxy; it recognises each call's
service (S3, SNS, SQS) and operation from the request itself, and either
forwards it to moto unchanged or injects a fault chosen by the first matching
:class:`Rule`:

* ``error``: a 5xx with an error body shaped like the service's own;
* ``throttle``: the service's throttling error (S3 ``SlowDown``, SNS
  ``Throttling``, SQS ``RequestThrottled``), which botocore backs off on;
* ``deny``: a 403 credential failure (``InvalidClientTokenId``);
* ``reset``: the connection is reset before the call reaches moto;
* ``reset_after``: the call reaches moto and takes effect, then the
  connection is reset, so the client cannot know it succeeded;
* ``delay``: forwarded after ``delay_s`` seconds (a long delay is a hang).

The proxy runs on an asyncio loop: :meth:`FaultProxy.start` on the caller's
loop, or :class:`ProxyThread` on a private loop for synchronous callers and
for processes that must keep serving while their main loop is busy. Rules may
be changed from any thread.
"""

from __future__ import annotations

import asyncio
import enum
import random
import re
import socket
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import aiohttp
from aiohttp import web

LOOPBACK = "127.0.0.1"
# Hop-by-hop headers (RFC 9110 section 7.6.1) and those the proxy must recompute.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
    }
)
_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/[^/]+/([a-z0-9-]+)/aws4_request")
_SNS_ACTIONS = frozenset(
    {
        "Publish",
        "PublishBatch",
        "CreateTopic",
        "DeleteTopic",
        "Subscribe",
        "Unsubscribe",
        "ListTopics",
        "ListSubscriptions",
        "ListSubscriptionsByTopic",
        "GetTopicAttributes",
        "SetTopicAttributes",
        "GetSubscriptionAttributes",
        "SetSubscriptionAttributes",
    }
)


class Service(enum.StrEnum):
    """The AWS services behind moto's one endpoint."""

    S3 = "s3"
    SNS = "sns"
    SQS = "sqs"
    OTHER = "other"


class Fault(enum.StrEnum):
    """What the proxy does to a call a rule picked."""

    ERROR = "error"
    THROTTLE = "throttle"
    DENY = "deny"
    RESET = "reset"
    RESET_AFTER = "reset_after"
    DELAY = "delay"


@dataclass(frozen=True)
class Call:
    """One request as the proxy understood it."""

    service: Service
    operation: str
    method: str
    path: str
    json_protocol: bool = False


@dataclass(frozen=True)
class Recorded:
    """A call as it arrived: what, with which body, when (monotonic seconds)."""

    call: Call
    body: bytes
    at: float


@dataclass
class Rule:
    """Inject `fault` into a share `rate` of the calls that match.

    `service` and `operation` of ``None`` match anything; `times` caps how
    many calls the rule affects (``None``: no cap). `status` and `code`
    override the fault's usual HTTP status and error code.
    """

    fault: Fault
    service: Service | None = None
    operation: str | None = None
    rate: float = 1.0
    times: int | None = None
    delay_s: float = 0.0
    status: int | None = None
    code: str | None = None
    hits: int = field(default=0, compare=False)

    def matches(self, call: Call) -> bool:
        """Whether the rule applies to `call` at all (before its rate and cap)."""
        return (self.service is None or self.service == call.service) and (
            self.operation is None or self.operation == call.operation
        )

    @property
    def spent(self) -> bool:
        """Whether the rule has affected as many calls as it may."""
        return self.times is not None and self.hits >= self.times


def _s3_operation(method: str, path: str, query: dict[str, list[str]], copy: bool) -> str:
    parts = [p for p in path.split("/", 2) if p] if path != "/" else []
    if not parts:
        return "ListBuckets"
    on_object = len(parts) == 2
    if "uploads" in query:
        return "CreateMultipartUpload" if method == "POST" else "ListMultipartUploads"
    if "uploadId" in query:
        named = {"PUT": "UploadPart", "POST": "CompleteMultipartUpload"}
        return named.get(method, "AbortMultipartUpload" if method == "DELETE" else "ListParts")
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    if on_object:
        if method == "PUT":
            return "CopyObject" if copy else "PutObject"
        return {"GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(
            method, f"{method}Object"
        )
    if method == "GET":
        return "ListObjectsV2" if query.get("list-type") == ["2"] else "ListObjects"
    return {"PUT": "CreateBucket", "HEAD": "HeadBucket", "DELETE": "DeleteBucket"}.get(
        method, f"{method}Bucket"
    )


def identify(method: str, path: str, query_string: str, headers: Any, body: bytes) -> Call:
    """Recognise the service and operation of a request to an AWS endpoint.

    The SigV4 credential scope names the service; ``X-Amz-Target`` (SQS's
    JSON protocol) or the form's ``Action`` (SNS, SQS's query protocol) names
    the operation; S3 operations follow from the method and path.
    """
    query = parse_qs(query_string, keep_blank_values=True)
    credential = headers.get("Authorization", "")
    if "Credential=" not in credential:
        # A presigned URL carries the scope in its query instead.
        credential = "Credential=" + query.get("X-Amz-Credential", [""])[0]
    scope = _SCOPE.search(credential)
    service_name = scope.group(1) if scope else ""
    target = headers.get("X-Amz-Target", "")
    if target.startswith("AmazonSQS."):
        return Call(Service.SQS, target.removeprefix("AmazonSQS."), method, path, True)
    action = ""
    if method == "POST" and b"Action=" in body[:4096]:
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        action = form.get("Action", [""])[0]
    action = action or query.get("Action", [""])[0]
    if service_name == "sns" or (not service_name and action in _SNS_ACTIONS):
        return Call(Service.SNS, action or "Unknown", method, path)
    if service_name == "sqs" or (not service_name and action):
        return Call(Service.SQS, action or "Unknown", method, path)
    if service_name in {"s3", ""}:
        copy = "x-amz-copy-source" in {k.lower() for k in headers}
        return Call(Service.S3, _s3_operation(method, path, query, copy), method, path)
    return Call(Service.OTHER, target or action or method, method, path)


_DEFAULTS: dict[Fault, dict[Service, tuple[int, str]]] = {
    Fault.ERROR: {
        Service.S3: (500, "InternalError"),
        Service.SNS: (500, "InternalFailure"),
        Service.SQS: (500, "InternalError"),
        Service.OTHER: (500, "InternalError"),
    },
    Fault.THROTTLE: {
        Service.S3: (503, "SlowDown"),
        Service.SNS: (400, "Throttling"),
        Service.SQS: (400, "RequestThrottled"),
        Service.OTHER: (400, "Throttling"),
    },
    Fault.DENY: {
        Service.S3: (403, "InvalidAccessKeyId"),
        Service.SNS: (403, "InvalidClientTokenId"),
        Service.SQS: (403, "InvalidClientTokenId"),
        Service.OTHER: (403, "InvalidClientTokenId"),
    },
}


def error_response(call: Call, status: int, code: str) -> web.Response:
    """An error in the wire format the service's client expects."""
    request_id = str(uuid.uuid4())
    message = f"injected by the fault proxy: {code}"
    side = "Sender" if status < 500 else "Receiver"
    if call.json_protocol:
        return web.Response(
            status=status,
            content_type="application/x-amz-json-1.0",
            headers={"x-amzn-query-error": f"{code};{side}", "x-amzn-RequestId": request_id},
            text=f'{{"__type": "com.amazonaws.sqs#{code}", "message": "{message}"}}',
        )
    if call.service is Service.S3:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            f"<RequestId>{request_id}</RequestId></Error>"
        )
        return web.Response(status=status, content_type="application/xml", text=body)
    namespace = "http://sns.amazonaws.com/doc/2010-03-31/"
    if call.service is Service.SQS:
        namespace = "http://queue.amazonaws.com/doc/2012-11-05/"
    body = (
        f'<ErrorResponse xmlns="{namespace}"><Error><Type>{side}</Type>'
        f"<Code>{code}</Code><Message>{message}</Message></Error>"
        f"<RequestId>{request_id}</RequestId></ErrorResponse>"
    )
    return web.Response(status=status, content_type="text/xml", text=body)


def _reset(request: web.Request) -> None:
    """Drop the client's connection with a TCP reset, as a failing network does."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Linger 0: close() sends RST instead of FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class FaultProxy:
    """Forward HTTP to `upstream`, failing calls as the rules say.

    ``counts`` tallies ``(service, operation, outcome)`` where outcome is
    ``"forwarded"`` or a :class:`Fault` value. With `record`, ``history``
    keeps every call with its request body and arrival time, for tests that
    check what a client asked for and when.
    """

    def __init__(
        self,
        upstream: str,
        rules: Iterable[Rule] = (),
        seed: int | None = None,
        *,
        record: bool = False,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.record = record
        self.history: list[Recorded] = []
        self._rules: list[Rule] = list(rules)
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._stopping: asyncio.Event | None = None
        self.url = ""

    # Rules, safe from any thread.

    def add(self, rule: Rule) -> Rule:
        """Add a rule after the existing ones; returns it (its ``hits`` update live)."""
        with self._lock:
            self._rules.append(rule)
        return rule

    def remove(self, rule: Rule) -> None:
        """Stop applying `rule`."""
        with self._lock:
            self._rules = [r for r in self._rules if r is not rule]

    def clear(self) -> None:
        """Forward everything from now on."""
        with self._lock:
            self._rules = []

    def decide(self, call: Call) -> Rule | None:
        """The rule that affects `call`, or ``None`` to forward it; counts the hit."""
        with self._lock:
            for rule in self._rules:
                if rule.spent or not rule.matches(call):
                    continue
                if rule.rate < 1.0 and self._random.random() >= rule.rate:
                    continue
                rule.hits += 1
                return rule
        return None

    def faults(self, service: Service | None = None, operation: str | None = None) -> int:
        """How many calls got a fault, optionally of one service or operation."""
        with self._lock:
            return sum(
                n
                for (s, op, outcome), n in self.counts.items()
                if outcome != "forwarded"
                and (service is None or s == service)
                and (operation is None or op == operation)
            )

    def calls(self, service: Service | None = None, operation: str | None = None) -> int:
        """How many calls arrived, optionally of one service or operation."""
        with self._lock:
            return sum(
                n
                for (s, op, _), n in self.counts.items()
                if (service is None or s == service) and (operation is None or op == operation)
            )

    def _record(self, call: Call, outcome: str) -> None:
        with self._lock:
            self.counts[(call.service.value, call.operation, outcome)] += 1

    # Serving.

    async def start(self, host: str = LOOPBACK, port: int = 0) -> str:
        """Listen on `host`:`port` (0: any free port); returns the proxy's URL."""
        self._stopping = asyncio.Event()
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # A forwarded long poll may be pending at shutdown; do not wait it out.
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port, reuse_address=True).start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.url = f"http://{bound_host}:{bound_port}"
        return self.url

    async def stop(self) -> None:
        """Stop listening; delayed calls are cut short."""
        if self._stopping is not None:
            self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _pause(self, seconds: float) -> None:
        assert self._stopping is not None
        with suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.read()
        except ConnectionError:
            # The client died mid-request (a killed consumer): nobody to answer.
            return web.Response(status=499)
        call = identify(request.method, request.path, request.query_string, request.headers, body)
        if self.record:
            with self._lock:
                self.history.append(Recorded(call, body, time.monotonic()))
        rule = self.decide(call)
        if rule is None:
            self._record(call, "forwarded")
            return await self._forward(request, body)
        self._record(call, rule.fault.value)
        if rule.fault is Fault.RESET:
            _reset(request)
            return web.Response(status=500)
        if rule.fault is Fault.DELAY:
            await self._pause(rule.delay_s)
            return await self._forward(request, body)
        if rule.fault is Fault.RESET_AFTER:
            await self._forward(request, body)
            _reset(request)
            return web.Response(status=500)
        status, code = _DEFAULTS[rule.fault][call.service]
        return error_response(call, rule.status or status, rule.code or code)

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers.pop("Content-Length", None)
        try:
            async with self._session.request(
                request.method,
                self.upstream + request.path_qs,
                headers=headers,
                data=body,
                allow_redirects=False,
            ) as upstream:
                payload = await upstream.read()
                out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
                return web.Response(status=upstream.status, headers=out, body=payload)
        except aiohttp.ClientError:
            # The upstream itself is gone: the client sees a gateway error.
            call = Call(Service.OTHER, "Upstream", request.method, request.path)
            return error_response(call, 502, "BadGateway")


class ProxyThread:
    """A :class:`FaultProxy` served from its own thread and event loop."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def _run(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=30)

    def start(self) -> str:
        """Start serving; returns the proxy's URL."""
        self._thread.start()
        url: str = self._run(self.proxy.start())
        return url

    def stop(self) -> None:
        """Stop serving and end the thread."""
        self._run(self.proxy.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()


@contextmanager
def proxy_in_thread(
    upstream: str, rules: Iterable[Rule] = (), seed: int | None = None
) -> Iterator[FaultProxy]:
    """A started :class:`FaultProxy` on a private thread, stopped on exit."""
    runner = ProxyThread(FaultProxy(upstream, rules, seed))
    runner.start()
    try:
        yield runner.proxy
    finally:
        runner.stop()
