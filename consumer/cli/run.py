"""`illustrator run`: the consumer with its health sidecar."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from consumer.aws.style_source import StyleShelf
    from consumer.delivery.gpu_thread import GpuThread
    from consumer.service.lifecycle import Companion
    from consumer.service.wiring import GeneratorLoader
    from consumer.settings import Settings
    from pipeline.api.interface import Generator
    from pipeline.api.safety import PictureChecker

T = TypeVar("T")
HELP = "consume the request queue: generate, upload, publish (with the health sidecar)"
REQUIRED = ("sqs_queue_url", "sns_topic_arn", "s3_bucket_name")
EPILOG = """\
required settings (environment or .env):
  SQS_QUEUE_URL   the request queue
  SNS_TOPIC_ARN   the topic completion events are published on
  S3_BUCKET_NAME  the bucket of inputs and outputs (no default)
  AWS_REGION and the standard AWS chain (credentials, AWS_ENDPOINT_URL) apply;
  MODEL_PATH (a local folder, a hub id in the local hub cache, builtin:tiny
  or builtin:blank), HEALTH_HOST/HEALTH_PORT, LOG_LEVEL, LOG_FORMAT and the
  rest are listed in env.example.

exit status:
  0  drained (SIGTERM/SIGINT, or --burst with nothing left to do)
  1  fatal error (the model cannot be loaded, the worker broke)
  2  bad configuration (one line on stderr naming the setting), such as a
     SAFETY_CHECKER_PATH that is missing or not a safety checker folder, an
     AUTH_TOKEN_FILE that is missing, unreadable or open to others, a
     STYLES_PATH catalog that cannot be read or has a style that cannot work,
     a real model with no GPU visible and DEVICE unset, or a largest allowed
     request (MAX_BATCH_PIXELS) that does not fit the GPU's memory

signals:
  SIGTERM, SIGINT  drain, then exit 0 (a second one stops at once)
  SIGHUP           read the STYLES_PATH catalog again; it replaces the old
                   one only if every style of it is valid
"""


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's options."""
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--burst",
        action="store_true",
        help="stop (exit 0) once the queue is empty and every job is done",
    )


async def load_generator(
    settings: Settings, gpu: GpuThread, styles: StyleShelf | None = None
) -> Generator:
    """Resolve the model's sources, then build and load the generator on `gpu`.

    With `styles`, the catalog is read first and the UNet gets the LoRA slot
    its styles need. torch and diffusers are imported here, on first use,
    never at start-up.
    """
    import dataclasses

    from consumer.aws.model_sources import prepare_pipeline_config
    from consumer.aws.safety_source import resolve_safety_checker
    from consumer.logs import adopt_library_loggers
    from pipeline.api.config import BUILTIN_BLANK
    from pipeline.api.factory import create_generator

    # Downloads run on the event loop, so the sidecar answers meanwhile; the
    # catalog and the checker first, so that a bad one is refused before the
    # model is fetched.
    if styles is not None and styles.book is None:
        await styles.load()
    checker_path = await resolve_safety_checker(settings)
    config = await prepare_pipeline_config(settings)
    if styles is not None:
        config = dataclasses.replace(config, **styles.pipeline_fields())

    def build() -> Generator:
        # Every model but the blank one loads through transformers and diffusers.
        adopt_library_loggers(load=config.model_path != BUILTIN_BLANK or bool(checker_path))
        try:
            # The generator first: it refuses a machine that cannot serve the
            # model (no GPU) before anything is loaded; the checker before the
            # load, which proves that the largest request fits beside it.
            generator = _refusing(lambda: create_generator(config))
            checker = _load_checker(checker_path, settings) if checker_path else None
            _refusing(generator.load, settings.styles_path)
        finally:
            # transformers and diffusers install their handlers on first use,
            # during the load: bring their lines back into the one stream.
            adopt_library_loggers()
        if checker is None:
            return generator
        from pipeline.api.safety import CheckedGenerator

        return CheckedGenerator(generator, checker, settings.safety_max_redraws)

    return await gpu.run(build)


def _refusing(step: Callable[[], T], styles_path: str = "") -> T:
    """`step`'s result; a machine that cannot serve these settings, or a
    style's LoRA the model refuses, is bad configuration."""
    from consumer.errors import ConfigError
    from pipeline.api.errors import StartRefusedError, StyleError

    try:
        return step()
    except StartRefusedError as error:
        raise ConfigError(str(error)) from None
    except StyleError as error:
        raise ConfigError(f"STYLES_PATH={styles_path}: {error}") from None


def with_styles(settings: Settings) -> tuple[GeneratorLoader, StyleShelf | None]:
    """The generator loader and the style catalog of ``STYLES_PATH`` (``None``
    when unset), for :func:`consumer.service.wiring.serve`."""
    import functools

    from consumer.aws.style_source import StyleShelf

    styles = StyleShelf(settings) if settings.styles_path else None
    return functools.partial(load_generator, styles=styles), styles


def _load_checker(path: str, settings: Settings) -> PictureChecker:
    """The safety checker at local `path`, loaded; a bad one is a configuration error."""
    from consumer.errors import ConfigError
    from pipeline.api.errors import ModelLoadError
    from pipeline.api.factory import load_safety_checker

    try:
        return load_safety_checker(
            path, device=settings.device or None, dtype=settings.dtype or None
        )
    except ModelLoadError as error:
        raise ConfigError(f"SAFETY_CHECKER_PATH={settings.safety_checker_path}: {error}") from None


def companions(settings: Settings) -> list[Companion]:
    """What runs beside the worker, such as a watcher that drains it on an
    EC2 lifecycle notice and completes the lifecycle action afterwards."""
    if settings.ec2_lifecycle_watch:
        from consumer.service.lifecycle import lifecycle_companion

        return [lifecycle_companion(settings)]
    return []


def main(args: argparse.Namespace) -> int:
    """Run until drained; 0 after a drain, 1 on a fatal error, 2 on bad settings."""
    from consumer.aws.model_sources import check_model_source
    from consumer.aws.safety_source import check_safety_checker_source
    from consumer.delivery.options import WorkerOptions
    from consumer.delivery.worker import EXIT_FATAL
    from consumer.logs import configure_logging
    from consumer.service.wiring import serve
    from consumer.settings import load_settings

    settings = load_settings(*REQUIRED)
    check_model_source(settings)
    check_safety_checker_source(settings)
    secrets = settings.secret_values()
    if settings.auth_enabled and settings.auth_token_file:
        from consumer.aws.auth_tokens import read_token_file

        # Missing, unreadable or open to others: exit 2 before the model loads.
        secrets += read_token_file(settings.auth_token_file).accepted()
    configure_logging(settings.log_level, settings.log_format, secrets=secrets)
    options = WorkerOptions(burst=args.burst)
    loader, styles = with_styles(settings)
    if styles is not None and not settings.styles_path.startswith("s3://"):
        # A local catalog is refused before anything starts (an s3:// one
        # once fetched, with the model's other artefacts).
        asyncio.run(styles.load())
    code = asyncio.run(
        serve(settings, loader, options=options, companions=companions(settings), styles=styles)
    )
    if code == EXIT_FATAL:
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """Leave without the interpreter's teardown.

    After a fatal error the GPU thread may still be inside torch (a wedged
    CUDA call); tearing the interpreter down around it can abort the process
    instead of exiting with `code`. Everything worth keeping (releases, the
    last log lines) is already done; the logs are flushed first.
    """
    import logging
    import os
    import sys

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
