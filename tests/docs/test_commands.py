"""Every `illustrator` command line in the documents parses as the CLI parses it,
and every `submit` line makes a request the service accepts."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from consumer.cli.main import build_parser
from consumer.cli.submit import build_body, image_key_for, request_fields
from consumer.settings import GenerationDefaults
from pipeline.api.spec import JobKind
from tests.support.docs import (
    DOCUMENTS,
    blocks,
    expansions,
    illustrator_argv,
    inline_commands,
    shell_lines,
    words,
)

RUNS_ILLUSTRATOR = re.compile(r"(^|\s)(\.venv/bin/)?illustrator\s")


def _fenced() -> list[tuple[str, list[str]]]:
    found = []
    for document in DOCUMENTS:
        for block in blocks(document):
            if block.language not in ("sh", ""):
                continue
            for line in shell_lines(block):
                if not RUNS_ILLUSTRATOR.search(line):
                    continue  # other commands may quote across lines
                argv = illustrator_argv(words(line))
                if argv is not None:
                    found.extend((block.where, concrete) for concrete in expansions(argv))
    return found


FENCED = _fenced()


class _Refused(Exception):
    pass


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = build_parser()

    def refuse(message: str) -> None:
        raise _Refused(message)

    # argparse prints and exits on a bad line; here it should say why instead.
    for action in [parser, *_subparsers(parser)]:
        action.error = refuse  # type: ignore[method-assign]
    return parser.parse_args(argv)


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found.extend([sub, *_subparsers(sub)])
    return found


def test_the_documents_hold_command_lines_of_every_operator_command() -> None:
    commands = {argv[0] for _, argv in FENCED if argv}
    assert {"submit", "dlq", "cancel", "health", "run", "sandbox"} <= commands, commands


@pytest.mark.parametrize(("where", "argv"), FENCED, ids=[" ".join(a) for _, a in FENCED])
def test_each_command_line_parses(where: str, argv: list[str]) -> None:
    try:
        _parse(argv)
    except _Refused as refused:
        pytest.fail(f"{where}: illustrator {' '.join(argv)}: {refused}")


SUBMITS = [(where, argv) for where, argv in FENCED if argv[:1] == ["submit"]]


@pytest.mark.parametrize(("where", "argv"), SUBMITS, ids=[" ".join(a) for _, a in SUBMITS])
def test_each_submit_line_makes_a_request_the_service_accepts(where: str, argv: list[str]) -> None:
    args = _parse(argv)
    defaults = GenerationDefaults()
    fields = request_fields(args)
    if args.image is not None:
        fields["image_key"] = image_key_for(
            Path(args.image), JobKind(args.kind), args.user_id, defaults
        )
    build_body(fields, defaults)  # raises InvalidRequest naming the fields


def _options(parser: argparse.ArgumentParser, path: list[str]) -> tuple[set[str], list[str]]:
    """The options reachable along the subcommand `path`, and what is left of it."""
    options: set[str] = set()
    for word in path:
        options |= {o for a in parser._actions for o in a.option_strings}
        sub = next(
            (
                a.choices[word]
                for a in parser._actions
                if isinstance(a, argparse._SubParsersAction) and word in a.choices
            ),
            None,
        )
        if sub is None:
            break
        parser = sub
    options |= {o for a in parser._actions for o in a.option_strings}
    return options, path


INLINE = [(f"{d}:{n}", argv) for d in DOCUMENTS for n, argv in inline_commands(d) if argv]


@pytest.mark.parametrize(("where", "argv"), INLINE, ids=[f"{w} {' '.join(a)}" for w, a in INLINE])
def test_each_command_named_in_running_text_exists_with_its_options(
    where: str, argv: list[str]
) -> None:
    parser = build_parser()
    path = [w.split("|")[0] for w in argv if not w.startswith(("-", "[")) and w[:1].islower()]
    commands = {
        c for a in parser._actions if isinstance(a, argparse._SubParsersAction) for c in a.choices
    }
    assert argv[0].startswith("-") or argv[0] in commands, f"{where}: no command {argv[0]!r}"
    options, _ = _options(parser, path)
    named = {w.strip("[]").split("=")[0] for w in argv if w.strip("[").startswith("--")}
    assert named <= options, f"{where}: {sorted(named - options)} unknown to illustrator {argv[0]}"
