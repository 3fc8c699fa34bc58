"""The configured scheduler and timestep spacing, built from the model's own configuration."""

from __future__ import annotations

import structlog

from pipeline.api.config import KARRAS_SCHEDULERS, PipelineConfig, check_scheduler
from pipeline.api.errors import ModelLoadError
from pipeline.engine.untyped import SDXLPipeline, diffusers

log = structlog.get_logger(__name__)


def configure_scheduler(pipe: SDXLPipeline, config: PipelineConfig) -> None:
    """Replace `pipe`'s scheduler by ``config.scheduler`` with ``config.timestep_spacing``.

    Built with ``from_config(pipe.scheduler.config, ...)``, so the model's
    noise schedule (betas, prediction type) carries over and only the
    sampler and the spacing change. With no scheduler named, the model's own
    scheduler class is rebuilt with the spacing.
    """
    current = pipe.scheduler
    name = config.scheduler or type(current).__name__
    karras = config.scheduler_karras
    try:
        check_scheduler(config.scheduler, karras=karras)
    except ValueError as error:
        raise ModelLoadError(str(error)) from error
    if karras and name not in KARRAS_SCHEDULERS:
        raise ModelLoadError(f"the model's scheduler {name} has no Karras sigmas")
    scheduler_class = getattr(diffusers, name, None)
    if scheduler_class is None:
        raise ModelLoadError(f"diffusers has no scheduler named {name}")
    overrides: dict[str, object] = {"timestep_spacing": config.timestep_spacing}
    if karras:
        overrides["use_karras_sigmas"] = True
    pipe.scheduler = scheduler_class.from_config(current.config, **overrides)
    log.info(
        "scheduler_configured",
        scheduler=name,
        karras=karras,
        timestep_spacing=config.timestep_spacing,
    )
