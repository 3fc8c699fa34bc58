"""`illustrator dlq list|redrive|purge`: look at, move back, or empty the DLQ.

The DLQ is ``SQS_DLQ_URL``, else the request queue's RedrivePolicy target.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

    from consumer.cli.redrive import DeadLetter, RedriveReport
    from consumer.cli.redrive_rules import CodeRule
    from consumer.settings import Settings

HELP = "list, redrive or purge the dead-letter queue"
EXIT_FAILED = 1
EXIT_USAGE = 2
DEFAULT_LIST_LIMIT = 50


RECEIVE_NOTE = (
    "listing counts as a receive: each message listed has its receive count raised by one"
)
ERROR_MESSAGE_WIDTH = 60


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the subcommands and their options."""
    parser.add_argument(
        "--priority",
        action="store_true",
        help="work on the priority queue's DLQ (from SQS_PRIORITY_QUEUE_URL's RedrivePolicy) "
        "and redrive back to the priority queue",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, summary: str, epilog: str | None = None) -> argparse.ArgumentParser:
        return actions.add_parser(name, help=summary, description=summary, epilog=epilog)

    listing = action(
        "list",
        "show what waits in the DLQ: message id, job, error code and message (leaves it there)",
        epilog=f"Note: {RECEIVE_NOTE}.",
    )
    listing.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIST_LIMIT,
        metavar="N",
        help=f"show at most N (default {DEFAULT_LIST_LIMIT})",
    )
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    redrive = action(
        "redrive",
        "move DLQ messages back to the request queue (at most those there when it starts)",
    )
    redrive.add_argument("--max", type=int, metavar="N", help="move at most N (default: all)")
    redrive.add_argument(
        "--method",
        choices=["auto", "move-task", "copy"],
        default="auto",
        help="move-task: SQS StartMessageMoveTask (keeps every attribute, moves every "
        "message, so only with --all); copy: send then delete, dropping the error "
        "attributes; auto (default): move-task where the endpoint has it, --all is given "
        "and --max is not, else copy",
    )
    _code_options(redrive)
    purge = action("purge", "delete every message in the DLQ and say how many")
    purge.add_argument("--yes", action="store_true", help="really delete them")


def _code_options(redrive: argparse.ArgumentParser) -> None:
    from consumer.cli.redrive_rules import CODES, UNCHANGEABLE

    left = ", ".join(sorted(code.value for code in UNCHANGEABLE))
    rules = redrive.add_mutually_exclusive_group()
    rules.add_argument(
        "--code",
        action="append",
        choices=CODES,
        metavar="CODE",
        help="move only requests dead-lettered with this error code (repeatable; "
        "'none': those without one)",
    )
    rules.add_argument(
        "--except-code",
        action="append",
        choices=CODES,
        metavar="CODE",
        help="move every request but those with this error code (repeatable)",
    )
    rules.add_argument(
        "--all",
        action="store_true",
        help=f"move every request; by default the codes that cannot succeed unchanged "
        f"({left}) are left in the DLQ",
    )


def _one_line(text: str | None, width: int) -> str:
    if not text:
        return "-"
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def _table(letters: list[DeadLetter]) -> str:
    from consumer.cli.terminal import duration

    rows = [("MESSAGE ID", "JOB", "KIND", "USER", "ERROR", "AGE", "RECEIVES", "MESSAGE")]
    rows += [
        (
            d.message_id,
            d.job_id or "-",
            d.kind or "-",
            d.user_id or "-",
            d.error_code or "-",
            duration(d.age_s),
            str(d.receive_count),
            _one_line(d.error_message, ERROR_MESSAGE_WIDTH),
        )
        for d in letters
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


async def _list(sqs: SQSClient, url: str, args: argparse.Namespace) -> int:
    import json
    import sys

    from consumer.cli.redrive import peek

    attributes = await sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    total = attributes["Attributes"].get("ApproximateNumberOfMessages", "?")
    letters = await peek(sqs, url, args.limit)
    if args.json:
        for letter in letters:
            print(json.dumps(letter.as_dict(), ensure_ascii=False))
        # On stderr, so that the output stays one JSON object per line.
        print(f"note: {RECEIVE_NOTE}", file=sys.stderr)
        return 0
    print(f"{url}: about {total} message(s); showing {len(letters)}")
    if letters:
        print(_table(letters))
    print(f"note: {RECEIVE_NOTE}")
    return 0


def _progress(report: RedriveReport) -> None:
    import sys

    print(f"moved {report.moved}", file=sys.stderr, flush=True)


async def _move_task(
    sqs: SQSClient, dlq_url: str, queue_url: str, strict: bool
) -> RedriveReport | None:
    """Redrive with StartMessageMoveTask; ``None`` when unavailable and not `strict`."""
    import sys

    from botocore.exceptions import BotoCoreError, ClientError

    from consumer.aws.clients import client_config, make_session
    from consumer.aws.queue_meta import queue_arn
    from consumer.cli.move_task import MoveTaskRedrive

    dlq_arn = await queue_arn(sqs, dlq_url)
    target_arn = await queue_arn(sqs, queue_url)
    region = sqs.meta.region_name
    async with make_session(region).client("sqs", config=client_config(max_attempts=1)) as probe:
        try:
            handle = await MoveTaskRedrive(probe, dlq_arn, target_arn).start()
        except (ClientError, BotoCoreError) as error:
            if strict:
                raise
            print(f"StartMessageMoveTask unavailable ({error}); moving by copy", file=sys.stderr)
            return None
    print(f"move task started ({handle})", file=sys.stderr)
    return await MoveTaskRedrive(sqs, dlq_arn, target_arn, _progress).follow(handle)


def _rule(args: argparse.Namespace) -> CodeRule:
    from consumer.cli.redrive_rules import CodeRule

    return CodeRule.from_options(
        everything=args.all, codes=args.code, except_codes=args.except_code
    )


def _print_left(report: RedriveReport, rule: CodeRule) -> None:
    from consumer.cli.redrive_rules import left_summary

    if not report.left:
        return
    count = sum(report.left.values())
    why = (
        "they cannot succeed unchanged; --all or --code CODE moves them"
        if rule.default
        else "not chosen by --code/--except-code"
    )
    print(f"left {count} message(s) in the DLQ: {left_summary(report.left)} ({why})")


async def _redrive(sqs: SQSClient, url: str, target: str, args: argparse.Namespace) -> int:
    from consumer.cli.redrive import CopyRedrive

    rule = _rule(args)
    report = None
    if args.method == "move-task" or (
        args.method == "auto" and args.max is None and rule.moves_all
    ):
        report = await _move_task(sqs, url, target, args.method == "move-task")
    if report is None:
        report = await CopyRedrive(sqs, url, target, _progress, rule).run(args.max)
    print(f"redrive ({report.method}): moved {report.moved} message(s) to {target}")
    _print_left(report, rule)
    if report.failed_again:
        print(
            f"{report.failed_again} moved by this run failed again and were left on the DLQ "
            "(not moved twice)"
        )
    if report.not_deleted:
        print(f"{report.not_deleted} were sent but are still on the DLQ (duplicates later)")
    for message_id, reason in report.failed.items():
        print(f"not moved: {message_id}: {reason}")
    return EXIT_FAILED if report.failed else 0


async def _not_purgeable(sqs: SQSClient, url: str, settings: Settings) -> str | None:
    """Why the queue at `url` must not be purged, if it is some queue's source
    (a request queue, or any queue with a RedrivePolicy), else ``None``."""
    from consumer.aws.queue_meta import redrive_policy

    name = settings.request_queue_setting(url)
    if name is not None:
        return f"{url} is the request queue ({name}), not a dead-letter queue"
    response = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])
    target, _ = redrive_policy(response.get("Attributes", {}))
    if target is not None:
        return f"{url} has a RedrivePolicy (to {target}): it is a source queue, not a DLQ"
    return None


async def _dlq(args: argparse.Namespace, settings: Settings) -> int:
    import sys

    from consumer.aws.clients import client_config, make_session
    from consumer.aws.queue_meta import dead_letter_url
    from consumer.cli.redrive import purge

    if args.priority:
        queue_url, configured, name = settings.sqs_priority_queue_url, "", "the priority queue"
    else:
        queue_url, configured, name = (
            settings.sqs_queue_url,
            settings.sqs_dlq_url,
            "the request queue",
        )
    async with make_session(settings.aws_region).client("sqs", config=client_config()) as sqs:
        url = await dead_letter_url(sqs, queue_url, configured)
        if url is None:
            hint = "give it one" if args.priority else "set SQS_DLQ_URL"
            print(f"illustrator dlq: {name} has no RedrivePolicy; {hint}", file=sys.stderr)
            return EXIT_USAGE
        if args.action == "list":
            return await _list(sqs, url, args)
        if args.action == "redrive":
            return await _redrive(sqs, url, queue_url, args)
        refusal = await _not_purgeable(sqs, url, settings)
        if refusal is not None:
            print(f"illustrator dlq purge: {refusal}; nothing deleted", file=sys.stderr)
            return EXIT_USAGE
        deleted = await purge(sqs, url)
        print(f"purged {url}: deleted {deleted} message(s)")
        return 0


def main(args: argparse.Namespace) -> int:
    """Run one DLQ action against the configured queues."""
    import asyncio
    import sys

    from botocore.exceptions import BotoCoreError, ClientError

    from consumer.settings import load_settings

    if args.action == "purge" and not args.yes:
        print("illustrator dlq purge: this deletes every DLQ message; add --yes", file=sys.stderr)
        return EXIT_USAGE
    if args.action == "redrive" and args.method == "move-task" and not _rule(args).moves_all:
        print(
            "illustrator dlq redrive: a move task moves every message; add --all, "
            "or use --method copy to choose by code",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if (args.action == "list" and args.limit < 1) or (
        args.action == "redrive" and args.max is not None and args.max < 1
    ):
        print("illustrator dlq: --limit and --max must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    settings = load_settings()
    if args.priority:
        settings.require("sqs_priority_queue_url")
    elif args.action == "redrive" or not settings.sqs_dlq_url:
        settings.require("sqs_queue_url")
    try:
        return asyncio.run(_dlq(args, settings))
    except (ClientError, BotoCoreError) as error:
        from consumer.cli.terminal import aws_error_line

        print(aws_error_line("illustrator dlq", error, "sqs"), file=sys.stderr)
        return EXIT_FAILED
