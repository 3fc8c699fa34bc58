"""The `illustrator` command line: the parser, one module per command, and their helpers."""
