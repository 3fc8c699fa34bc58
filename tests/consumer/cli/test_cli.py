"""The command line as a whole: --version, help texts, AWS errors in one line."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from consumer.cli import main as cli
from consumer.cli.terminal import aws_error_line

ROOT = Path(__file__).resolve().parents[3]


def _illustrator(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer", *argv],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_version_is_the_installed_packages() -> None:
    done = _illustrator("--version")
    assert done.returncode == 0
    assert done.stdout == f"illustrator {importlib.metadata.version('autobio-illustrator')}\n"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _commands() -> dict[str, argparse.ArgumentParser]:
    commands = _subparsers(cli.build_parser())
    nested = {
        f"{name} {sub}": parser
        for name, command in commands.items()
        for sub, parser in _subparsers(command).items()
    }
    return {**commands, **nested}


def test_every_command_and_dlq_action_has_a_description() -> None:
    commands = _commands()
    assert {"dlq list", "dlq redrive", "dlq purge", "run", "submit"} <= set(commands)
    for name, parser in commands.items():
        assert parser.description, name
        assert "\n" not in parser.description.strip(), name


def test_integer_options_are_all_shown_as_n() -> None:
    for name, parser in _commands().items():
        for action in parser._actions:
            if action.type is int and action.option_strings:
                assert action.metavar == "N", f"{name} {action.option_strings}"


def test_an_unreachable_endpoint_is_one_line_with_its_url() -> None:
    done = _illustrator(
        "dlq",
        "list",
        AWS_ENDPOINT_URL="http://127.0.0.1:1/",
        SQS_QUEUE_URL="http://127.0.0.1:1/000000000000/requests",
        AWS_MAX_ATTEMPTS="1",
    )
    assert done.returncode == 1
    assert done.stderr == (
        "illustrator dlq: cannot reach http://127.0.0.1:1/ (EndpointConnectionError)\n"
    )


def test_a_web_page_instead_of_an_aws_answer_is_not_printed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://proxy.internal:8080")
    page = "<html><head><title>502 Bad Gateway</title></head>\n<body><h1>nginx</h1></body></html>"
    error = ClientError(
        {"Error": {"Code": "502", "Message": page}, "ResponseMetadata": {"HTTPStatusCode": 502}},
        "GetQueueAttributes",
    )
    line = aws_error_line("illustrator dlq", error, "sqs")
    assert line == (
        "illustrator dlq: http://proxy.internal:8080: GetQueueAttributes: 502: "
        "the endpoint answered with a web page, not an AWS response"
    )


def test_a_connection_error_names_the_endpoint_it_tried() -> None:
    error = EndpointConnectionError(endpoint_url="https://sqs.eu-west-1.amazonaws.com/")
    assert aws_error_line("illustrator submit", error, "sqs") == (
        "illustrator submit: cannot reach https://sqs.eu-west-1.amazonaws.com/ "
        "(EndpointConnectionError)"
    )
