"""`illustrator demo`: the whole path on this machine, no AWS account, no GPU.

An embedded AWS endpoint (moto) with the queue, DLQ, topic and bucket; a
sample avatar and photo drawn in code; the consumer in this process in burst
mode with ``--model``, else ``MODEL_PATH`` from the process environment (not
from ``.env``), else ``builtin:tiny``, whose random weights draw noise; one
memory and one subject job. The events are printed and the pictures saved under
``demo-output/``. Exit status 0 when both jobs succeeded, else 1.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.api.config import BUILTIN_BLANK, BUILTIN_TINY

if TYPE_CHECKING:
    from consumer.cli.local_aws import Sandbox, SandboxResources
    from consumer.settings import Settings

HELP = "run the whole path here: embedded AWS, builtin:tiny, one memory and one subject job"
USER_ID = "demo-user"
DEFAULT_TIMEOUT_S = 300.0
EXIT_FAILED = 1
# builtin:tiny draws noise whatever the step count; a few steps keep it quick.
TINY_STEPS = 4


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's options."""
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("demo-output"),
        metavar="DIR",
        help="where the pictures are saved (default demo-output)",
    )
    parser.add_argument(
        "--model",
        metavar="MODEL",
        help="MODEL_PATH for this run (default: MODEL_PATH from the environment, "
        "else builtin:tiny; a .env file's MODEL_PATH is not used)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"give up after S seconds (default {DEFAULT_TIMEOUT_S:.0f})",
    )


def _requests(settings: Settings) -> list[dict[str, Any]]:
    extra: dict[str, Any] = {}
    if settings.model_path.startswith("builtin:"):
        extra["num_inference_steps"] = TINY_STEPS
    return [
        {
            "job_id": "demo-memory-1",
            "kind": "memory",
            "user_id": USER_ID,
            "prompt": "a picnic by the lake with my grandparents, summer 1975",
            "seed": 1234,
            **extra,
        },
        {"job_id": "demo-subject-1", "kind": "subject", "user_id": USER_ID, "seed": 5678, **extra},
    ]


def _upload_samples(
    sandbox: Sandbox, resources: SandboxResources, settings: Settings, output: Path
) -> None:
    from consumer.cli import samples

    pictures = {
        f"{settings.s3_avatar_prefix}{USER_ID}.png": ("input-avatar.png", samples.avatar()),
        f"{settings.s3_subject_prefix}{USER_ID}.jpg": ("input-photo.jpg", samples.photo()),
    }
    s3 = sandbox.client("s3")
    for key, (name, data) in pictures.items():
        s3.put_object(Bucket=resources.bucket, Key=key, Body=data)
        (output / name).write_bytes(data)
        print(f"  input   s3://{resources.bucket}/{key} (also {output / name})")


def _send(sandbox: Sandbox, resources: SandboxResources, settings: Settings) -> int:
    from consumer.contract.signing import sign

    sqs = sandbox.client("sqs")
    requests = _requests(settings)
    for request in requests:
        body = json.dumps(request)
        attributes = {}
        if settings.auth_enabled:
            signature = sign(body.encode(), settings.auth_token.get_secret_value())
            attributes["signature"] = {"DataType": "String", "StringValue": signature}
        sqs.send_message(
            QueueUrl=resources.queue_url, MessageBody=body, MessageAttributes=attributes
        )
        print(f"  request {body}")
    return len(requests)


def _consume(settings: Settings, timeout: float) -> int:
    import asyncio

    from consumer.cli.run import load_generator
    from consumer.delivery.options import WorkerOptions
    from consumer.service.wiring import serve

    # Burst mode: the consumer stops by itself once both jobs are done.
    options = WorkerOptions(burst=True, poll_wait_s=1)
    try:
        return asyncio.run(
            asyncio.wait_for(serve(settings, load_generator, options=options), timeout)
        )
    except TimeoutError:
        print(f"illustrator demo: the consumer did not finish within {timeout:.0f} s")
        return EXIT_FAILED


def _collect(sandbox: Sandbox, resources: SandboxResources, expected: int) -> list[dict[str, Any]]:
    sqs = sandbox.client("sqs")
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while len(events) < expected and time.monotonic() < deadline:
        response = sqs.receive_message(
            QueueUrl=resources.observer_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        events.extend(json.loads(m["Body"]) for m in response.get("Messages", []))
    return sorted(events, key=lambda e: str(e.get("kind")))


def _report(events: list[dict[str, Any]], sandbox: Sandbox, output: Path) -> bool:
    s3 = sandbox.client("s3")
    for event in events:
        print(f"\n{event.get('kind')} job {event.get('job_id')}: {event.get('status')}")
        print(json.dumps(event, indent=2, ensure_ascii=False))
        for item in event.get("data") or []:
            bucket, key = item["s3_uri"].removeprefix("s3://").split("/", 1)
            path = output / key.rsplit("/", 1)[-1]
            path.write_bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            print(f"  saved {path}")
    return all(event.get("status") == "succeeded" for event in events)


def main(args: argparse.Namespace) -> int:
    """Run the demo; 0 when both jobs succeeded."""
    from consumer.cli.local_aws import Sandbox, local_model, local_settings
    from consumer.logs import configure_logging

    started = time.monotonic()
    sandbox = Sandbox()
    endpoint = sandbox.start()
    try:
        resources = sandbox.create()
        settings = local_settings(resources, model=local_model(args.model), worker_id="demo")
        configure_logging(settings.log_level, "console", secrets=settings.secret_values())
        args.output.mkdir(parents=True, exist_ok=True)
        print(f"illustrator demo: embedded AWS at {endpoint}, model {settings.model_path}")
        print(f"  {model_note(settings.model_path)}")
        _upload_samples(sandbox, resources, settings, args.output)
        expected = _send(sandbox, resources, settings)
        code = _consume(settings, args.timeout)
        events = _collect(sandbox, resources, expected)
        succeeded = _report(events, sandbox, args.output)
    finally:
        sandbox.stop()
    ok = code == 0 and succeeded and len(events) == expected
    verdict = "both jobs succeeded" if ok else "FAILED"
    print(f"\nillustrator demo: {verdict} in {time.monotonic() - started:.1f} s")
    print(f"  pictures and their inputs: {args.output.resolve()}")
    if settings.model_path == BUILTIN_TINY:
        print("  (noise, as expected of builtin:tiny's random weights)")
    return 0 if ok else EXIT_FAILED


def model_note(model: str) -> str:
    """One line on what the model draws, so nobody mistakes noise for a bug."""
    if model == BUILTIN_TINY:
        return (
            "builtin:tiny is a small SDXL + IP-Adapter pipeline with random weights: it runs "
            "the real code path on a CPU and draws noise. Use --model or MODEL_PATH for SDXL."
        )
    if model == BUILTIN_BLANK:
        return "builtin:blank loads no model: it draws a plain picture."
    return f"{model} draws real pictures (slow without a GPU)."
