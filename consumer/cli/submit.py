"""`illustrator submit`: send one request as AutoBio would, and optionally wait.

Exit status: 0 sent (or, with ``--wait``, succeeded); 1 the job failed or AWS
refused a call; 2 the request or configuration is invalid; 3 no event came
within ``--timeout``; 130/143 interrupted (the temporary queue is removed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import mimetypes
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from consumer.contract.request import Request, input_prefix, parse_request
from consumer.contract.signing import SIGNATURE_ATTRIBUTE, sign
from consumer.errors import InvalidRequest
from consumer.settings import GenerationDefaults
from pipeline.api.spec import JobKind

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import MessageAttributeValueTypeDef

    from consumer.cli.dlq_watch import DeadLetterWatch
    from consumer.cli.event_waiter import EventWaiter, Waited
    from consumer.settings import Settings

HELP = "send one request (signed when AUTH_ENABLED), optionally wait for its event and picture"
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_TIMEOUT = 3
EXIT_TERMINATED = 143
DEFAULT_TIMEOUT_S = 600.0
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
IMAGE_TYPES[".webp"] = "image/webp"


@dataclass(frozen=True, slots=True)
class Sent:
    """What `submit` sent: its settings, the SQS message id, whether it was
    signed, and the DLQ it watched (``None``: none found or readable)."""

    settings: Settings
    message_id: str
    signed: bool
    dlq_url: str | None


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's options."""
    parser.add_argument("kind", choices=["memory", "subject"], help="the kind of illustration")
    parser.add_argument(
        "--user-id", dest="user_id", required=True, metavar="ID", help="the AutoBio user"
    )
    parser.add_argument("--prompt", metavar="TEXT", help="what to draw (required for memory)")
    parser.add_argument(
        "--steps",
        dest="num_inference_steps",
        type=int,
        metavar="N",
        help="num_inference_steps (1-150)",
    )
    parser.add_argument("--ip-adapter-scale", type=float, metavar="X", help="0.0-1.0")
    parser.add_argument("--guidance-scale", type=float, metavar="X", help="0.0-20.0")
    parser.add_argument("--negative-prompt", metavar="TEXT", help="what to avoid")
    parser.add_argument(
        "--style-prompt", metavar="TEXT", help="the style (default: the kind's style)"
    )
    parser.add_argument(
        "--style",
        metavar="NAME",
        help="a style of the workers' catalog (default: its default style, if any)",
    )
    parser.add_argument(
        "--style-strength", type=float, metavar="X", help="0.0-1.5, times the style's LoRA scale"
    )
    parser.add_argument(
        "--seed", type=int, metavar="N", help="0 to 2^32-1 (default: random, reported)"
    )
    parser.add_argument("--width", type=int, metavar="N", help="multiple of 64, 64-2048")
    parser.add_argument("--height", type=int, metavar="N", help="multiple of 64, 64-2048")
    parser.add_argument("--job-id", metavar="ID", help="idempotency key (default: a new one)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--image",
        type=Path,
        metavar="FILE",
        help="upload FILE as the user's avatar (memory) or photo (subject) first, "
        "and name it in the request's image_key",
    )
    source.add_argument("--image-key", metavar="KEY", help="use this existing S3 key as the input")
    parser.add_argument(
        "--priority",
        action="store_true",
        help="send to the priority queue (SQS_PRIORITY_QUEUE_URL): started before waiting requests",
    )
    parser.add_argument("--wait", action="store_true", help="wait for the completion event")
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        help=f"with --wait: give up after S seconds (default {DEFAULT_TIMEOUT_S:.0f})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="with --wait: save the PNG here (default ./<kind>_<job>.png)",
    )


def _prepare(args: argparse.Namespace, settings: Settings) -> tuple[bytes, Request]:
    """The validated body; with ``--image`` its key is set to the upload's."""
    fields = request_fields(args)
    if args.image is not None:
        check_image(
            args.image,
            settings.max_input_bytes,
            settings.max_input_pixels,
            settings.max_input_aspect,
        )
        fields["image_key"] = image_key_for(args.image, JobKind(args.kind), args.user_id, settings)
    return build_body(fields, settings)


async def _report(
    waited: Waited,
    args: argparse.Namespace,
    request: Request,
    sent: Sent,
    s3: S3Client,
) -> int:
    import json
    import sys

    from consumer.cli import wait_report
    from consumer.cli.event_waiter import download
    from consumer.contract.keys import output_key, s3_uri

    settings = sent.settings
    if waited.dead_letter is not None and sent.dlq_url is not None:
        return wait_report.dead_lettered(waited.dead_letter, request.job_id, sent.dlq_url)
    event = waited.event
    if event is None:
        key = output_key(settings, request.user_id, request.kind, request.job_id)
        output = s3_uri(settings.s3_bucket_name, key)
        return wait_report.nothing(request.job_id, args.timeout_s, output, sent.dlq_url)
    print(json.dumps(event, indent=2, ensure_ascii=False))
    if waited.anonymous:
        return wait_report.anonymous_failure(event, request.job_id, sent.message_id, sent.signed)
    if event.get("status") != "succeeded":
        error = event.get("error") or {}
        print(
            f"illustrator submit: job {request.job_id} {event.get('status', 'failed')}: "
            f"{error.get('code', '?')}: {error.get('message', '')}".rstrip(": "),
            file=sys.stderr,
        )
        return EXIT_FAILED
    out = args.out or Path(f"{request.kind.value}_{request.job_id}.png")
    size = await download(s3, event["data"][0]["s3_uri"], out)
    print(f"saved {out} ({size} bytes)", file=sys.stderr)
    return 0


async def _wait(
    waiter: EventWaiter, job_id: str, timeout_s: float, watch: DeadLetterWatch | None
) -> Waited:
    import sys

    from consumer.cli.terminal import spinner

    async with spinner(sys.stderr, f"waiting for job {job_id}"):
        return await waiter.wait(timeout_s, watch)


def _stop_on_sigterm() -> None:
    # SIGTERM (a CI timeout, `kill`) cancels like Ctrl-C so the temporary
    # queue is removed; only possible on the main thread.
    import asyncio
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        task = asyncio.current_task()
        if task is not None:
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)


async def _submit(args: argparse.Namespace, settings: Settings) -> int:
    import sys
    from contextlib import AsyncExitStack

    from consumer.aws.clients import client_config, make_session
    from consumer.cli.dlq_watch import watch_dead_letters
    from consumer.cli.event_waiter import waiting_for
    from consumer.contract.keys import s3_uri

    _stop_on_sigterm()
    body, request = _prepare(args, settings)
    token = signing_token(settings) if settings.auth_enabled else None
    session = make_session(settings.aws_region)
    async with AsyncExitStack() as stack:
        sqs = await stack.enter_async_context(session.client("sqs", config=client_config()))
        s3 = await stack.enter_async_context(session.client("s3", config=client_config()))
        queue_url = settings.sqs_priority_queue_url if args.priority else settings.sqs_queue_url
        waiter, watch = None, None
        if args.wait:
            sns = await stack.enter_async_context(session.client("sns", config=client_config()))
            # Subscribed before the request is sent, so its event cannot slip by.
            waiter = await stack.enter_async_context(
                waiting_for(sqs, sns, settings.sns_topic_arn, request.job_id)
            )
            dlq = "" if args.priority else settings.sqs_dlq_url
            watch = await watch_dead_letters(sqs, queue_url, dlq, request.job_id)
        if args.image is not None and request.image_key is not None:
            await upload_image(s3, settings.s3_bucket_name, request.image_key, args.image)
            print(
                f"uploaded {args.image} to {s3_uri(settings.s3_bucket_name, request.image_key)}",
                file=sys.stderr,
            )
        message_id = await send_request(sqs, queue_url, body, token, request.user_id)
        print(f"sent job {request.job_id} (message {message_id})", file=sys.stderr)
        if waiter is None:
            print(request.job_id)
            return 0
        waiter.message_ids.add(message_id)
        if watch is not None:
            watch.message_ids.add(message_id)
        waited = await _wait(waiter, request.job_id, args.timeout_s, watch)
        sent = Sent(settings, message_id, token is not None, watch.url if watch else None)
        return await _report(waited, args, request, sent, s3)


def main(args: argparse.Namespace) -> int:
    """Validate, upload, send, and with ``--wait`` wait for the event."""
    import asyncio
    import sys

    from botocore.exceptions import BotoCoreError, ClientError

    from consumer.settings import load_settings

    if not args.wait and (args.timeout is not None or args.out is not None):
        print("illustrator submit: --timeout and --out need --wait", file=sys.stderr)
        return EXIT_INVALID
    if args.timeout is not None and args.timeout <= 0:
        print("illustrator submit: --timeout must be positive", file=sys.stderr)
        return EXIT_INVALID
    args.timeout_s = DEFAULT_TIMEOUT_S if args.timeout is None else args.timeout
    queue = "sqs_priority_queue_url" if args.priority else "sqs_queue_url"
    required = [queue, "s3_bucket_name"] + (["sns_topic_arn"] if args.wait else [])
    settings = load_settings(*required)
    try:
        return asyncio.run(_submit(args, settings))
    except InvalidRequest as error:
        print(f"illustrator submit: invalid request: {error.message}", file=sys.stderr)
        return EXIT_INVALID
    except (ClientError, BotoCoreError) as error:
        from consumer.cli.terminal import aws_error_line

        print(aws_error_line("illustrator submit", error, "sqs"), file=sys.stderr)
        return EXIT_FAILED
    except asyncio.CancelledError:
        return EXIT_TERMINATED


def signing_token(settings: Settings) -> str:
    """The current token `submit` signs with: ``AUTH_TOKEN``, or the first line
    of ``AUTH_TOKEN_FILE``. A Secrets Manager secret is the workers' to read."""
    if settings.auth_token_file:
        from consumer.aws.auth_tokens import read_token_file

        return read_token_file(settings.auth_token_file).current
    if not settings.auth_token.get_secret_value():
        from consumer.errors import ConfigError

        raise ConfigError("illustrator submit signs with AUTH_TOKEN or AUTH_TOKEN_FILE")
    return settings.auth_token.get_secret_value()


def new_job_id(kind: JobKind) -> str:
    """A fresh job id such as ``memory-3f2a...``."""
    return f"{kind.value}-{uuid.uuid4().hex}"


def image_key_for(path: Path, kind: JobKind, user_id: str, defaults: GenerationDefaults) -> str:
    """Where `path` goes when uploaded as the user's picture for `kind`.

    The key is the one the consumer would look for without an ``image_key``
    (``<prefix><user_id><ext>``), so the upload replaces the user's picture.
    """
    suffix = path.suffix.lower()
    if suffix not in IMAGE_TYPES:
        accepted = ", ".join(sorted(IMAGE_TYPES))
        raise InvalidRequest(f"--image must be one of {accepted}, not {path.name!r}")
    return f"{input_prefix(kind, defaults)}{user_id}{suffix}"


def build_body(fields: dict[str, Any], defaults: GenerationDefaults) -> tuple[bytes, Request]:
    """The JSON body of the request fields in `fields` that are set, checked by
    the consumer's own parser; a new job id when none is given.

    Raises :class:`InvalidRequest` naming the offending fields.
    """
    payload: dict[str, Any] = {"version": 1}
    payload.update({name: value for name, value in fields.items() if value is not None})
    payload.setdefault("job_id", new_job_id(JobKind(payload["kind"])))
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return body, parse_request(body, defaults)


def request_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The request's fields as given on the command line (``None`` when not).

    Each option's destination is the request field's own name, so the fields
    are read from the request model rather than listed again here.
    """
    return {name: getattr(args, name, None) for name in Request.model_fields if name != "version"}


def check_image(
    path: Path, max_bytes: int, max_pixels: int, max_aspect: float | None = None
) -> None:
    """Refuse a missing, oversized, too oddly shaped or undecodable image before upload.

    The picture is decoded by the consumer's own safe decoder, with its
    limits, so what the consumer would refuse is refused here, at once.
    """
    from pipeline.api.errors import InvalidImageError
    from pipeline.api.images import decode_image

    if not path.is_file():
        raise InvalidRequest(f"--image {str(path)!r} is not a readable file")
    size = path.stat().st_size
    if size > max_bytes:
        raise InvalidRequest(f"--image is {size} bytes; the service accepts at most {max_bytes}")
    try:
        decode_image(
            path.read_bytes(), max_bytes=max_bytes, max_pixels=max_pixels, max_aspect=max_aspect
        )
    except InvalidImageError as error:
        raise InvalidRequest(f"--image {path.name}: {error}") from None
    except OSError as error:
        raise InvalidRequest(f"--image {str(path)!r} cannot be read: {error.strerror}") from None


async def upload_image(s3: S3Client, bucket: str, key: str, path: Path) -> None:
    """Put the local picture at `key` with its content type."""
    content_type = IMAGE_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0]
    data = await asyncio.to_thread(path.read_bytes)
    await s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=data,
        ContentType=content_type or "application/octet-stream",
    )


async def send_request(
    sqs: SQSClient, queue_url: str, body: bytes, token: str | None, user_id: str
) -> str:
    """Send `body`, signed with `token` when given; the SQS message id.

    The message group is the user (SQS fair queues): one user's large
    backlog then does not hold up the other users' requests.
    """
    attributes: dict[str, MessageAttributeValueTypeDef] = {}
    if token is not None:
        attributes[SIGNATURE_ATTRIBUTE] = {"DataType": "String", "StringValue": sign(body, token)}
    response = await sqs.send_message(
        QueueUrl=queue_url,
        MessageBody=body.decode("utf-8"),
        MessageAttributes=attributes,
        MessageGroupId=user_id,
    )
    return response["MessageId"]
