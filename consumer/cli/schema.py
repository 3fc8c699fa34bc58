"""`illustrator schema`: print or write the contract's machine-readable form."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "print the JSON Schemas of the request and event (or the AsyncAPI document)"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's options."""
    parser.add_argument("--asyncapi", action="store_true", help="print the AsyncAPI 3.0 YAML")
    parser.add_argument(
        "--write", metavar="DIR", type=Path, help="write every document under DIR (e.g. docs)"
    )


def write_documents(directory: Path) -> list[Path]:
    """Write ``schemas/request.schema.json``, ``schemas/event.schema.json`` and
    ``asyncapi.yaml`` under `directory`, and the table of limits in its
    ``contract.md`` when there is one; return the paths written."""
    from consumer.contract.documents import asyncapi_yaml, json_schemas, with_limits

    (directory / "schemas").mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = directory / "schemas" / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
    path = directory / "asyncapi.yaml"
    path.write_text(asyncapi_yaml(), encoding="utf-8")
    written.append(path)
    contract = directory / "contract.md"
    if contract.exists():
        contract.write_text(with_limits(contract.read_text(encoding="utf-8")), encoding="utf-8")
        written.append(contract)
    return written


def main(args: argparse.Namespace) -> int:
    """Print or write the documents."""
    from consumer.contract.documents import asyncapi_yaml, json_schemas

    if args.write:
        for path in write_documents(args.write):
            print(path)
    elif args.asyncapi:
        print(asyncapi_yaml(), end="")
    else:
        print(json.dumps(json_schemas(), indent=2, ensure_ascii=False))
    return 0
