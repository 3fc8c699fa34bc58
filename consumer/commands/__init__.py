"""Subcommands of `illustrator`, one module each (see :mod:`consumer.cli`)."""
