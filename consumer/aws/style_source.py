"""The style catalog from ``STYLES_PATH``, its LoRA files fetched and checked.

The catalog and each style's LoRA are local files or ``s3://`` objects
fetched through the artefact cache, as every other weight is (a LoRA given
as a relative path lies beside the catalog). Each LoRA's safetensors header
is read without torch: a LoRA with text-encoder layers, of a kind of layer
no slot holds, over the slot's rank or outside its layers, or missing, is
refused, naming the style and the reason. A catalog is taken whole or not
at all.

:class:`StyleShelf` holds the catalog a worker serves. It is read at start
(a bad catalog: exit status 2, before the model loads) and again on
``SIGHUP``; a reloaded catalog must fit the LoRA slot made at start, and is
swapped in only when every style of it is valid, else the old one stays
(one log line, the ``style_catalog_reloads_total{outcome="refused"}``
metric).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from consumer.aws.artifact_cache import ArtifactCache
from consumer.aws.s3_download import is_s3_uri
from consumer.contract.catalog import (
    MAX_CATALOG_BYTES,
    CatalogError,
    StyleBook,
    StyleCatalog,
    StyleLora,
    lora_source,
    parse_catalog,
)
from consumer.errors import ConfigError
from consumer.metrics import Metrics
from consumer.settings import Settings
from pipeline.api.lora_files import (
    LoraFacts,
    LoraFileError,
    StyleSlot,
    file_digest,
    inspect_lora,
    refusal,
    slot_for,
)

log = structlog.get_logger(__name__)

SETTING = "STYLES_PATH"
Fetch = Callable[[str], Awaitable[Path]]


@dataclass(frozen=True, slots=True)
class StyleCheck:
    """One style of a catalog, checked: its LoRA's facts, or why it is refused."""

    name: str
    lora: str | None
    facts: LoraFacts | None = None
    path: str | None = None
    problem: str | None = None


def fetcher(settings: Settings, cache: ArtifactCache | None = None) -> Fetch:
    """Local paths as they are; ``s3://`` objects through the artefact cache.

    Without `cache`, each fetch opens the cache afresh: a catalog read at
    start and again on a reload is read on two event loops, and the cache
    keeps loop-bound state.
    """

    async def fetch(source: str) -> Path:
        if not is_s3_uri(source):
            return Path(source)
        opened = cache or ArtifactCache(settings.model_cache_dir, region=settings.aws_region)
        return await opened.fetch_file(source)

    return fetch


async def read_catalog(source: str, fetch: Fetch, label: str | None = None) -> StyleCatalog:
    """The catalog at `source`; :class:`ConfigError` naming it (as `label`,
    default ``STYLES_PATH=<source>``) when it cannot be read or parsed."""
    label = label or f"{SETTING}={source}"
    try:
        path = await fetch(source)
        data = await asyncio.to_thread(_read_bounded, path)
        return parse_catalog(data, source)
    except (CatalogError, OSError) as error:
        raise ConfigError(f"{label}: {_reason(error)}") from None
    except ConfigError as error:
        raise ConfigError(f"{label}: {error.message}") from None


def _reason(error: Exception) -> str:
    if isinstance(error, FileNotFoundError):
        return "does not exist"
    if isinstance(error, OSError):
        return f"cannot be read: {error.strerror}"
    return str(error)


def _read_bounded(path: Path) -> bytes:
    with path.open("rb") as handle:
        data = handle.read(MAX_CATALOG_BYTES + 1)
    return data


async def check_styles(
    catalog: StyleCatalog, source: str, fetch: Fetch, slot: StyleSlot | None = None
) -> list[StyleCheck]:
    """Every style of `catalog` with its LoRA fetched and read, in name order.

    A LoRA is checked against `slot` when given (a reload), else against
    what any slot may hold (start, where the slot is made to fit them all).
    """
    checks = []
    for name in sorted(catalog.styles):
        lora = catalog.styles[name].lora
        if lora is None:
            checks.append(StyleCheck(name, None))
            continue
        where = lora_source(source, lora)
        try:
            path = await fetch(where)
            facts = await asyncio.to_thread(inspect_lora, path)
        except (LoraFileError, ConfigError) as error:
            message = error.message if isinstance(error, ConfigError) else str(error)
            checks.append(StyleCheck(name, where, problem=f"LoRA {message}"))
            continue
        problem = refusal(facts) if slot is None else slot.refusal(facts)
        checks.append(StyleCheck(name, where, facts, str(path), problem))
    return checks


def refusals(checks: list[StyleCheck]) -> str | None:
    """The refused styles and why, in one line; ``None`` when all are valid."""
    refused = [f"style {c.name!r}: {c.problem}" for c in checks if c.problem]
    return "; ".join(refused) or None


_DIGESTS: dict[tuple[str, int, int], str] = {}


def _digest(path: str) -> str:
    # A file's digest is read again only when it changed (a reload re-reads
    # every LoRA of the catalog, most of them the same files).
    stat = Path(path).stat()
    key = (path, stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_digest(path)
    return _DIGESTS[key]


async def load_book(source: str, fetch: Fetch, slot: StyleSlot | None = None) -> StyleBook:
    """The catalog at `source` with its LoRAs, all valid, else :class:`ConfigError`."""
    catalog = await read_catalog(source, fetch)
    checks = await check_styles(catalog, source, fetch, slot)
    if (problem := refusals(checks)) is not None:
        raise ConfigError(f"{SETTING}={source}: {problem}")
    loras = {}
    for check in checks:
        if check.facts is not None and check.path is not None and check.lora is not None:
            digest = await asyncio.to_thread(_digest, check.path)
            loras[check.name] = StyleLora(check.lora, check.path, digest, check.facts)
    return StyleBook(catalog, loras, source)


class StyleShelf:
    """The style catalog a worker serves, read at start and on each reload."""

    def __init__(self, settings: Settings, *, cache: ArtifactCache | None = None) -> None:
        self.source = settings.styles_path
        self._fetch = fetcher(settings, cache)
        self._lock = asyncio.Lock()
        self.book: StyleBook | None = None
        self.slot: StyleSlot | None = None
        self.metrics: Metrics | None = None

    async def load(self) -> StyleBook:
        """Read the catalog at start; the LoRA slot is made to hold all its LoRAs."""
        book = await load_book(self.source, self._fetch)
        self.book = book
        self.slot = slot_for(lora.facts for lora in book.loras.values())
        log.info(
            "styles_loaded",
            source=self.source,
            styles=len(book.catalog.styles),
            default=book.catalog.default,
            names=book.names[:30],
            slot=self.slot.describe() if self.slot else None,
        )
        return book

    def pipeline_fields(self) -> dict[str, Any]:
        """The :class:`~pipeline.api.config.PipelineConfig` fields of the styles."""
        if self.book is None:
            return {}
        loras = tuple(
            (name, lora.path, lora.digest) for name, lora in sorted(self.book.loras.items())
        )
        return {"style_slot": self.slot, "style_loras": loras}

    async def reload(self) -> bool:
        """Read the catalog again; swap it in if all of it is valid. Whether it was."""
        async with self._lock:
            if self.book is None:
                # Before the first read (the worker is still starting): that
                # read is the one that makes the slot.
                log.info("styles_reload_skipped", reason="the catalog is not read yet")
                return False
            try:
                book = await load_book(self.source, self._fetch, self.slot or NO_SLOT)
            except Exception as error:
                message = error.message if isinstance(error, ConfigError) else repr(error)
                log.error("styles_reload_refused", source=self.source, error=message)
                self._count("refused")
                return False
            self.book = book
            log.info("styles_reloaded", source=self.source, styles=len(book.catalog.styles))
            self._count("applied")
            return True

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.style_reloads.labels(outcome=outcome).inc()


# A worker whose catalog had no LoRA at start has no slot: any LoRA is refused.
NO_SLOT = StyleSlot(rank=0, kinds=frozenset())
