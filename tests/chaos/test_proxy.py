"""The fault proxy: transparent when idle, and each fault as a client sees it."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import aioboto3
import boto3
import pytest
from aiobotocore.config import AioConfig
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError
from multidict import CIMultiDict

from tests.chaos.proxy import Call, Fault, FaultProxy, Rule, Service, identify, proxy_in_thread
from tests.support.aws import REGION, Stack

NO_RETRIES = Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=5)


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    with proxy_in_thread(moto_endpoint, seed=1) as started:
        yield started


def client(proxy: FaultProxy, service: str, config: Config = NO_RETRIES) -> Any:
    # Typed as Any: the stubs know clients only by literal service names.
    make: Any = boto3.client
    return make(service, endpoint_url=proxy.url, region_name=REGION, config=config)


def _auth(service: str) -> dict[str, str]:
    return {
        "Authorization": (
            f"AWS4-HMAC-SHA256 Credential=AKID/20261124/us-east-1/{service}/aws4_request, "
            "SignedHeaders=host, Signature=abc"
        )
    }


def _sqs_json(operation: str) -> tuple[Any, ...]:
    """A case of an SQS call in the JSON protocol: the operation in a header."""
    headers = {**_auth("sqs"), "X-Amz-Target": f"AmazonSQS.{operation}"}
    return ("POST", "/", "", headers, b"{}", (Service.SQS, operation))


@pytest.mark.parametrize(
    ("method", "path", "query", "headers", "body", "expected"),
    [
        ("GET", "/b/k.png", "", _auth("s3"), b"", (Service.S3, "GetObject")),
        ("PUT", "/b/dir/k.png", "", _auth("s3"), b"x", (Service.S3, "PutObject")),
        ("HEAD", "/b/k", "", _auth("s3"), b"", (Service.S3, "HeadObject")),
        ("GET", "/b", "list-type=2&prefix=g", _auth("s3"), b"", (Service.S3, "ListObjectsV2")),
        ("PUT", "/b", "", _auth("s3"), b"", (Service.S3, "CreateBucket")),
        ("POST", "/b", "delete=", _auth("s3"), b"<Delete/>", (Service.S3, "DeleteObjects")),
        ("GET", "/", "", _auth("s3"), b"", (Service.S3, "ListBuckets")),
        (
            "GET",
            "/b/k",
            "X-Amz-Credential=AKID%2F20261124%2Fus-east-1%2Fs3%2Faws4_request",
            {},
            b"",
            (Service.S3, "GetObject"),
        ),
        _sqs_json("ReceiveMessage"),
        _sqs_json("ChangeMessageVisibility"),
        ("POST", "/", "", _auth("sns"), b"Action=Publish&TopicArn=x", (Service.SNS, "Publish")),
        (
            "POST",
            "/1/q",
            "",
            _auth("sqs"),
            b"Action=DeleteMessage&R=1",
            (Service.SQS, "DeleteMessage"),
        ),
        # Unsigned calls: the action alone tells SNS from SQS, else it is S3.
        ("POST", "/", "", {}, b"Action=Publish", (Service.SNS, "Publish")),
        ("POST", "/", "", {}, b"Action=SendMessage", (Service.SQS, "SendMessage")),
        ("GET", "/bucket/key", "", {}, b"", (Service.S3, "GetObject")),
    ],
)
def test_calls_are_recognised_from_the_request(
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    body: bytes,
    expected: tuple[Service, str],
) -> None:
    call = identify(method, path, query, CIMultiDict(headers), body)
    assert (call.service, call.operation) == expected


def test_without_rules_every_service_works_through_the_proxy(
    proxy: FaultProxy, stack: Stack
) -> None:
    s3, sqs, sns = client(proxy, "s3"), client(proxy, "sqs"), client(proxy, "sns")
    s3.put_object(Bucket=stack.bucket, Key="dir/a.bin", Body=b"\x00\x01" * 5000)
    assert s3.head_object(Bucket=stack.bucket, Key="dir/a.bin")["ContentLength"] == 10000
    assert s3.get_object(Bucket=stack.bucket, Key="dir/a.bin")["Body"].read() == b"\x00\x01" * 5000
    listed = s3.list_objects_v2(Bucket=stack.bucket, Prefix="dir/")["Contents"]
    assert [o["Key"] for o in listed] == ["dir/a.bin"]
    sqs.send_message(QueueUrl=stack.queue_url, MessageBody="hello")
    (message,) = sqs.receive_message(QueueUrl=stack.queue_url, WaitTimeSeconds=1)["Messages"]
    sqs.delete_message(QueueUrl=stack.queue_url, ReceiptHandle=message["ReceiptHandle"])
    sns.publish(TopicArn=stack.topic_arn, Message='{"ok": true}')
    assert stack.events(wait_s=1) == [{"ok": True}]
    assert proxy.faults() == 0
    for service, operation in [
        (Service.S3, "PutObject"),
        (Service.S3, "HeadObject"),
        (Service.S3, "GetObject"),
        (Service.S3, "ListObjectsV2"),
        (Service.SQS, "SendMessage"),
        (Service.SQS, "ReceiveMessage"),
        (Service.SQS, "DeleteMessage"),
        (Service.SNS, "Publish"),
    ]:
        assert proxy.calls(service, operation) == 1, operation


def test_a_rule_hits_only_its_service_and_operation(proxy: FaultProxy, stack: Stack) -> None:
    s3 = client(proxy, "s3")
    s3.put_object(Bucket=stack.bucket, Key="k", Body=b"v")
    proxy.add(Rule(Fault.ERROR, Service.S3, "GetObject"))
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket=stack.bucket, Key="k")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    s3.put_object(Bucket=stack.bucket, Key="k2", Body=b"v")
    client(proxy, "sqs").get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["All"])
    assert proxy.faults() == 1
    assert proxy.faults(Service.S3, "GetObject") == 1


SHAPES = [
    (service, fault, status, code)
    for service, shapes in {
        "s3": [(Fault.ERROR, 500, "InternalError"), (Fault.THROTTLE, 503, "SlowDown")],
        "sns": [(Fault.THROTTLE, 400, "Throttling"), (Fault.DENY, 403, "InvalidClientTokenId")],
        "sqs": [
            (Fault.ERROR, 500, "InternalError"),
            (Fault.THROTTLE, 400, "RequestThrottled"),
            (Fault.DENY, 403, "InvalidClientTokenId"),
        ],
    }.items()
    for fault, status, code in shapes
]


def _call(service: str, api: Any, stack: Stack) -> None:
    if service == "s3":
        api.put_object(Bucket=stack.bucket, Key="k", Body=b"v")
    elif service == "sns":
        api.publish(TopicArn=stack.topic_arn, Message="m")
    else:
        api.send_message(QueueUrl=stack.queue_url, MessageBody="m")


@pytest.mark.parametrize(("service", "fault", "status", "code"), SHAPES)
def test_errors_look_like_the_services_own(
    proxy: FaultProxy, stack: Stack, service: str, fault: Fault, status: int, code: str
) -> None:
    proxy.add(Rule(fault, Service(service)))
    with pytest.raises(ClientError) as caught:
        _call(service, client(proxy, service), stack)
    assert caught.value.response["Error"]["Code"] == code
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == status


def test_a_reset_before_forwarding_never_reaches_moto(proxy: FaultProxy, stack: Stack) -> None:
    proxy.add(Rule(Fault.RESET, Service.SQS, "SendMessage"))
    with pytest.raises(ConnectionClosedError):
        client(proxy, "sqs").send_message(QueueUrl=stack.queue_url, MessageBody="lost")
    assert "Messages" not in stack.client("sqs").receive_message(QueueUrl=stack.queue_url)


def test_a_reset_after_forwarding_takes_effect_unseen(proxy: FaultProxy, stack: Stack) -> None:
    proxy.add(Rule(Fault.RESET_AFTER, Service.SQS, "SendMessage"))
    with pytest.raises(ConnectionClosedError):
        client(proxy, "sqs").send_message(QueueUrl=stack.queue_url, MessageBody="arrived")
    (message,) = stack.client("sqs").receive_message(QueueUrl=stack.queue_url)["Messages"]
    assert message["Body"] == "arrived"


def test_a_delay_slows_the_call_but_it_succeeds(proxy: FaultProxy, stack: Stack) -> None:
    proxy.add(Rule(Fault.DELAY, Service.S3, delay_s=0.3))
    started = time.monotonic()
    client(proxy, "s3").put_object(Bucket=stack.bucket, Key="slow", Body=b"v")
    assert time.monotonic() - started >= 0.3
    assert stack.client("s3").get_object(Bucket=stack.bucket, Key="slow")["Body"].read() == b"v"


def test_a_hang_times_the_client_out_and_does_not_hold_up_stopping(
    moto_endpoint: str, stack: Stack
) -> None:
    impatient = Config(retries={"total_max_attempts": 1}, read_timeout=0.5)
    with proxy_in_thread(moto_endpoint) as proxy:
        proxy.add(Rule(Fault.DELAY, Service.S3, "GetObject", delay_s=600))
        with pytest.raises(ReadTimeoutError):
            client(proxy, "s3", impatient).get_object(Bucket=stack.bucket, Key="k")
        started = time.monotonic()
    assert time.monotonic() - started < 10


def test_times_caps_a_rule_then_calls_flow_again(proxy: FaultProxy, stack: Stack) -> None:
    rule = proxy.add(Rule(Fault.ERROR, Service.SNS, "Publish", times=2))
    sns = client(proxy, "sns")
    for _ in range(2):
        with pytest.raises(ClientError):
            sns.publish(TopicArn=stack.topic_arn, Message="m")
    sns.publish(TopicArn=stack.topic_arn, Message="m")
    assert rule.hits == 2
    assert proxy.faults(Service.SNS) == 2


def test_a_retrying_client_rides_through_throttling(proxy: FaultProxy, stack: Stack) -> None:
    proxy.add(Rule(Fault.THROTTLE, Service.SNS, "Publish", times=2))
    patient = Config(retries={"mode": "standard", "total_max_attempts": 4})
    client(proxy, "sns", patient).publish(TopicArn=stack.topic_arn, Message='{"n": 1}')
    assert proxy.faults(Service.SNS, "Publish") == 2
    assert stack.events(wait_s=1) == [{"n": 1}]


def test_rate_picks_about_that_share_of_calls() -> None:
    proxy = FaultProxy("http://127.0.0.1:1", [Rule(Fault.ERROR, Service.SQS, rate=0.25)], seed=5)
    call = Call(Service.SQS, "ReceiveMessage", "POST", "/")
    other = Call(Service.S3, "GetObject", "GET", "/b/k")
    picked = sum(proxy.decide(call) is not None for _ in range(2000))
    assert 400 < picked < 600
    assert all(proxy.decide(other) is None for _ in range(100))


def test_rules_apply_in_order_and_can_be_removed() -> None:
    proxy = FaultProxy("http://127.0.0.1:1")
    call = Call(Service.S3, "PutObject", "PUT", "/b/k")
    first = proxy.add(Rule(Fault.DELAY, Service.S3, "PutObject", delay_s=1))
    proxy.add(Rule(Fault.ERROR))
    assert proxy.decide(call) is first
    proxy.remove(first)
    decided = proxy.decide(call)
    assert decided is not None
    assert decided.fault is Fault.ERROR
    proxy.clear()
    assert proxy.decide(call) is None


def test_a_dead_upstream_is_a_gateway_error(stack: Stack) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with proxy_in_thread(f"http://127.0.0.1:{port}") as proxy, pytest.raises(ClientError) as caught:
        client(proxy, "s3").head_bucket(Bucket=stack.bucket)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 502


async def test_the_proxy_serves_async_clients_on_the_callers_loop(
    moto_endpoint: str, stack: Stack
) -> None:
    proxy = FaultProxy(moto_endpoint)
    url = await proxy.start()
    try:
        proxy.add(Rule(Fault.THROTTLE, Service.S3, "PutObject", times=1))
        session = aioboto3.Session(region_name=REGION)
        patient = AioConfig(retries={"mode": "standard", "total_max_attempts": 3})
        async with session.client("s3", endpoint_url=url, config=patient) as s3:
            await s3.put_object(Bucket=stack.bucket, Key="async", Body=b"v")
            got = await s3.get_object(Bucket=stack.bucket, Key="async")
            assert await got["Body"].read() == b"v"
    finally:
        await proxy.stop()
    assert proxy.faults(Service.S3, "PutObject") == 1
