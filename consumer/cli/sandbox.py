"""`illustrator sandbox`: a local stack for people who integrate with the service.

An embedded AWS endpoint (moto) on loopback with the request queue, its DLQ,
the topic (with an observer queue subscribed), the bucket, a sample avatar
and photo for the user id ``demo``, and the consumer (``--model``, else
``MODEL_PATH`` from the process environment, else ``builtin:tiny``), running
until SIGINT or SIGTERM (exit 0). With ``--styles`` (else ``STYLES_PATH``)
the consumer serves that style catalog, and requests may name its styles
(``illustrator submit --style NAME``); SIGHUP reads it again.

It prints, and with ``--env-file`` writes, the ``export NAME=value`` lines
with which `illustrator submit` and `illustrator dlq` (or any AWS SDK) in
another shell talk to it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from consumer.cli.local_aws import Sandbox, SandboxResources
    from consumer.settings import Settings

HELP = "a local stack to integrate against: embedded AWS, sample pictures, the consumer"
USER_ID = "demo"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's options."""
    parser.add_argument(
        "--env-file",
        type=Path,
        metavar="PATH",
        help="also write the export lines to PATH (for `. PATH` in another shell)",
    )
    parser.add_argument(
        "--model",
        metavar="MODEL",
        help="MODEL_PATH for the consumer (default: MODEL_PATH from the environment, "
        "else builtin:tiny; a .env file's MODEL_PATH is not used)",
    )
    parser.add_argument(
        "--styles",
        metavar="CATALOG",
        help="the style catalog the consumer serves (STYLES_PATH): requests then take "
        "--style NAME; see `illustrator styles check`",
    )


def export_lines(resources: SandboxResources) -> list[str]:
    """``export NAME=value`` lines that point a shell at the sandbox."""
    from consumer.cli.local_aws import PLACEHOLDER, REGION

    values = {
        "AWS_ENDPOINT_URL": resources.endpoint,
        "AWS_ACCESS_KEY_ID": PLACEHOLDER,
        "AWS_SECRET_ACCESS_KEY": PLACEHOLDER,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "SQS_QUEUE_URL": resources.queue_url,
        "SQS_DLQ_URL": resources.dlq_url,
        "SNS_TOPIC_ARN": resources.topic_arn,
        "S3_BUCKET_NAME": resources.bucket,
    }
    return [f"export {name}={shlex.quote(value)}" for name, value in values.items()]


def write_env_file(path: Path, lines: list[str]) -> None:
    """Write `lines` to `path` whole: a reader waiting for the file never sees
    half of it (written beside it, then renamed)."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(partial, path)


def _upload_samples(sandbox: Sandbox, resources: SandboxResources, settings: Settings) -> None:
    from consumer.cli import samples

    s3 = sandbox.client("s3")
    pictures = {
        f"{settings.s3_avatar_prefix}{USER_ID}.png": samples.avatar(),
        f"{settings.s3_subject_prefix}{USER_ID}.png": samples.photo(fmt="PNG"),
    }
    for key, data in pictures.items():
        s3.put_object(Bucket=resources.bucket, Key=key, Body=data, ContentType="image/png")


def _style_lines(settings: Settings) -> list[str]:
    if not settings.styles_path:
        return []
    return [
        f"# styles from {settings.styles_path} (the consumer lists them as it starts);",
        f"#   illustrator submit memory --user-id {USER_ID} --prompt 'a day at the sea' "
        "--style NAME --style-strength 0.8 --steps 4 --wait",
    ]


def _banner(resources: SandboxResources, settings: Settings, lines: list[str]) -> str:
    from consumer.cli.demo import model_note

    return "\n".join(
        [
            f"# illustrator sandbox: embedded AWS at {resources.endpoint}",
            f"# model {settings.model_path}: {model_note(settings.model_path)}",
            f"# user id {USER_ID!r} has an avatar ({settings.s3_avatar_prefix}{USER_ID}.png) "
            f"and a photo ({settings.s3_subject_prefix}{USER_ID}.png)",
            f"# observer queue (raw events): {resources.observer_url}",
            "# in another shell, run these lines, then for example:",
            f"#   illustrator submit memory --user-id {USER_ID} --prompt 'a day at the sea' "
            "--steps 4 --wait",
            "#   illustrator dlq list",
            *_style_lines(settings),
            "# Ctrl-C (or SIGTERM) stops the sandbox; its queues and pictures are gone then.",
            *lines,
        ]
    )


def main(args: argparse.Namespace) -> int:
    """Run the stack until SIGINT or SIGTERM; 0 after a drain."""
    import asyncio

    from consumer.cli.local_aws import Sandbox, local_model, local_settings
    from consumer.cli.run import with_styles
    from consumer.delivery.options import WorkerOptions
    from consumer.logs import configure_logging
    from consumer.service.wiring import serve

    sandbox = Sandbox()
    sandbox.start()
    try:
        resources = sandbox.create("illustrator-local")
        settings = local_settings(
            resources, model=local_model(args.model), worker_id="local-worker"
        )
        if args.styles:
            settings = settings.model_copy(update={"styles_path": args.styles})
        configure_logging(settings.log_level, "console", secrets=settings.secret_values())
        _upload_samples(sandbox, resources, settings)
        lines = export_lines(resources)
        # The file first: whoever reads the printed lines may look for it at once.
        if args.env_file is not None:
            write_env_file(args.env_file, lines)
        print(_banner(resources, settings, lines), flush=True)
        if args.env_file is not None:
            print(f"# also written to {args.env_file}", file=sys.stderr, flush=True)
        # A short long-poll keeps a stop quick; the sandbox is not billed per call.
        options = WorkerOptions(poll_wait_s=2)
        loader, styles = with_styles(settings)
        return asyncio.run(serve(settings, loader, options=options, styles=styles))
    finally:
        sandbox.stop()
