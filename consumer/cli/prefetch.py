"""`illustrator prefetch`: fetch the model's files into the cache; load nothing.

A warm-pool instance runs it while it is prepared, before the group stops
it: the weights are then on its volume, and the worker it starts when it
enters service loads them from there rather than from S3. It needs no GPU
and no queue; it reads the same settings as `illustrator run`.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from consumer.settings import Settings

HELP = "fetch every model file the settings name into MODEL_CACHE_DIR, then exit (no GPU)"
EPILOG = """\
exit status:
  0  every file is in the cache (fetched now, or already there)
  1  a download failed or failed its checks
  2  bad configuration (one line on stderr naming the setting), such as an
     s3:// source that does not exist
"""
EXIT_FAILED = 1


def configure(parser: argparse.ArgumentParser) -> None:
    """The command takes no options."""
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


async def fetch(settings: Settings) -> None:
    """Fetch the safety checker, then the model and its adapters, as `run` does."""
    from consumer.aws.model_sources import prepare_pipeline_config
    from consumer.aws.safety_source import resolve_safety_checker

    await resolve_safety_checker(settings)
    await prepare_pipeline_config(settings)


def main(args: argparse.Namespace) -> int:
    """Fetch; 0 when all is cached, 1 when a download failed, 2 on bad settings."""
    import structlog

    from consumer.aws.model_sources import check_model_source
    from consumer.aws.s3_download import ArtifactError
    from consumer.aws.safety_source import check_safety_checker_source
    from consumer.logs import configure_logging
    from consumer.settings import load_settings

    settings = load_settings()
    check_model_source(settings)
    check_safety_checker_source(settings)
    configure_logging(settings.log_level, settings.log_format, secrets=settings.secret_values())
    log = structlog.get_logger(__name__)
    try:
        asyncio.run(fetch(settings))
    except ArtifactError as error:
        log.error("prefetch_failed", error=str(error))
        return EXIT_FAILED
    log.info("prefetch_done", cache=settings.model_cache_dir)
    return 0
