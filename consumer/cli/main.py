"""The `illustrator` command line.

Each subcommand is a module of :mod:`consumer.cli` exposing ``HELP``,
``configure(parser)`` and ``main(args) -> int``; its heavy imports stay
inside ``main`` so that ``illustrator --help`` is quick.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from consumer.errors import ConfigError

EXIT_CONFIG = 2
DISTRIBUTION = "autobio-illustrator"


# The subcommands, each a module of this package; the package's other
# modules are the commands' helpers.
COMMANDS = (
    "cancel",
    "demo",
    "dlq",
    "health",
    "prefetch",
    "run",
    "sandbox",
    "schema",
    "styles",
    "submit",
)


def _command_modules() -> dict[str, ModuleType]:
    package = __name__.rpartition(".")[0]
    return {
        name.replace("_", "-"): importlib.import_module(f"{package}.{name}") for name in COMMANDS
    }


def version() -> str:
    """The installed package's version: ``pyproject.toml`` is its one source."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The parser with one subcommand per module of :mod:`consumer.cli`."""
    parser = argparse.ArgumentParser(
        prog="illustrator", description="AutoBio illustration service (SQS -> SDXL -> S3 -> SNS)."
    )
    parser.add_argument("--version", action="version", version=f"illustrator {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in _command_modules().items():
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.configure(command)
        command.set_defaults(handler=module.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; configuration errors print one line and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        status: int = args.handler(args)
    except ConfigError as error:
        print(f"illustrator: {error.message}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    return status
