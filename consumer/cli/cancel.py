"""`illustrator cancel`: write a job's cancellation marker, as AutoBio does.

The marker is an empty object at ``<S3_CANCEL_PREFIX><user_id>/<job_id>`` in
``S3_BUCKET_NAME``. Every worker looks for it: a job not yet drawn is
skipped, a running one stopped at its next denoising step, each with a
``cancelled`` event; a job whose outputs are written already is not affected.
"""

from __future__ import annotations

import argparse

HELP = "cancel a job: write its marker under S3_CANCEL_PREFIX (its event says cancelled)"
EXIT_INVALID = 2
EXIT_FAILED = 1


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's options."""
    parser.add_argument("job_id", metavar="JOB_ID", help="the request's job_id")
    parser.add_argument("--user", required=True, metavar="USER_ID", help="the request's user_id")
    parser.add_argument(
        "--priority",
        action="store_true",
        help="the job was sent to the priority queue; accepted so the same flags as "
        "`submit` work: one marker cancels the job on either queue",
    )


def main(args: argparse.Namespace) -> int:
    """Validate the ids, write the marker, print its S3 URI."""
    import asyncio
    import sys

    from botocore.exceptions import BotoCoreError, ClientError
    from pydantic import TypeAdapter, ValidationError

    from consumer.contract.keys import cancel_key, s3_uri
    from consumer.contract.request import Identifier
    from consumer.settings import load_settings

    ids = TypeAdapter(Identifier)
    for name, value in (("JOB_ID", args.job_id), ("--user", args.user)):
        try:
            ids.validate_python(value)
        except ValidationError:
            print(
                f"illustrator cancel: {name} must be 1 to 128 of A-Z a-z 0-9 _ -",
                file=sys.stderr,
            )
            return EXIT_INVALID
    settings = load_settings("s3_bucket_name")
    key = cancel_key(settings.s3_cancel_prefix, args.user, args.job_id)
    try:
        asyncio.run(_write(settings.aws_region, settings.s3_bucket_name, key))
    except (ClientError, BotoCoreError) as error:
        from consumer.cli.terminal import aws_error_line

        print(aws_error_line("illustrator cancel", error, "s3"), file=sys.stderr)
        return EXIT_FAILED
    print(f"cancelled job {args.job_id}: {s3_uri(settings.s3_bucket_name, key)}", file=sys.stderr)
    return 0


async def _write(region: str, bucket: str, key: str) -> None:
    from consumer.aws.clients import client_config, make_session

    async with make_session(region).client("s3", config=client_config()) as s3:
        await s3.put_object(Bucket=bucket, Key=key, Body=b"")
