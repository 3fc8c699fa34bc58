"""`illustrator styles check CATALOG`: what a worker would say of a style catalog.

The same checks as a worker's start (or, with ``--running``, its reload),
without a model or a GPU: the catalog parses, and each style's LoRA exists
(local, or ``s3://`` through the artefact cache under ``MODEL_CACHE_DIR``),
has no text-encoder layers, targets only layers a slot holds, and fits the
slot. Prints one row per style (its LoRA's rank, size, layers and digest)
and the slot the catalog makes.

Exit status: 0 every style is valid; 2 the catalog cannot be read or parsed,
or a style is refused (each refused row says why).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from consumer.aws.style_source import Fetch, StyleCheck
    from pipeline.api.lora_files import StyleSlot

HELP = "check a style catalog as a worker would, offline: its styles, LoRA ranks, sizes, layers"
EXIT_INVALID = 2


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's subcommands and options."""
    sub = parser.add_subparsers(dest="styles_command", required=True, metavar="SUBCOMMAND")
    summary = "check CATALOG as a worker would; exit 0 if every style is valid, else 2"
    check = sub.add_parser("check", help=summary, description=summary)
    check.add_argument("catalog", metavar="CATALOG", help="a catalog file: local path or s3:// URI")
    check.add_argument(
        "--running",
        metavar="CATALOG",
        help="check CATALOG as a reload of workers started with this catalog: its LoRAs "
        "must fit the slot that one made",
    )


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    scaled = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        scaled /= 1024
        if scaled < 1024 or unit == "GiB":
            break
    return f"{scaled:.1f} {unit}"


def table(checks: list[StyleCheck], digests: dict[str, str], default: str | None) -> list[str]:
    """The rows printed for `checks`: aligned columns, then one line per problem."""
    header = ("STYLE", "LORA RANK", "SIZE", "DTYPE", "LAYERS", "DIGEST", "STATUS")
    rows = [header]
    for check in checks:
        facts = check.facts
        name = check.name + (" (default)" if check.name == default else "")
        rows.append(
            (
                name,
                str(facts.rank) if facts else "-",
                _size(facts.size) if facts else "-",
                facts.dtype if facts else "-",
                ",".join(sorted(facts.kinds)) if facts else "-",
                digests.get(check.name, "-"),
                "refused" if check.problem else "ok",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines += [f"style {c.name!r}: {c.problem}" for c in checks if c.problem]
    return lines


async def _slot_of(source: str, fetch: Fetch) -> StyleSlot | None:
    from consumer.aws.style_source import check_styles, read_catalog
    from pipeline.api.lora_files import slot_for

    checks = await check_styles(await read_catalog(source, fetch, source), source, fetch)
    return slot_for(c.facts for c in checks if c.facts is not None and not c.problem)


async def _check(args: argparse.Namespace) -> int:
    import asyncio

    from consumer.aws.style_source import NO_SLOT, check_styles, fetcher, read_catalog
    from consumer.settings import load_settings
    from pipeline.api.lora_files import file_digest, slot_for

    fetch = fetcher(load_settings())
    slot = None
    if args.running:
        slot = await _slot_of(args.running, fetch) or NO_SLOT
    catalog = await read_catalog(args.catalog, fetch, args.catalog)
    checks = await check_styles(catalog, args.catalog, fetch, slot)
    digests = {
        c.name: await asyncio.to_thread(file_digest, c.path)
        for c in checks
        if c.path is not None and c.problem is None
    }
    for line in table(checks, digests, catalog.default):
        print(line)
    made = slot_for(c.facts for c in checks if c.facts is not None and not c.problem)
    if slot is not None:
        print(f"slot of the running workers: {slot.describe() if slot.kinds else 'none'}")
    else:
        print(f"slot: {made.describe() if made else 'none (no style has a LoRA)'}")
    refused = sum(1 for c in checks if c.problem)
    print(f"{len(checks)} styles, {refused} refused")
    return EXIT_INVALID if refused else 0


def main(args: argparse.Namespace) -> int:
    """Check the catalog; 0 when every style is valid, else 2."""
    import asyncio

    return asyncio.run(_check(args))
