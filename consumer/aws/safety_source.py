"""Where the safety checker comes from: ``SAFETY_CHECKER_PATH`` as a local folder.

The value is a local folder, a hub id in the local hub cache, or an ``s3://``
prefix fetched into ``MODEL_CACHE_DIR`` by the same resumable cache as the
model. Either way its layout (that of
``CompVis/stable-diffusion-safety-checker``) is checked before the model
loads, and a missing or malformed folder is a :class:`ConfigError`: one line
naming the setting, exit status 2.
"""

from __future__ import annotations

from pathlib import Path

from consumer.aws.artifact_cache import ArtifactCache
from consumer.aws.s3_download import is_s3_uri
from consumer.errors import ConfigError
from consumer.settings import Settings
from pipeline.api.config import cached_snapshot, hub_cache_dir
from pipeline.api.safety import checker_folder_problem

SETTING = "SAFETY_CHECKER_PATH"


def local_checker_folder(value: str) -> Path:
    """The folder a local `value` names (itself, or a cached hub id's snapshot), checked.

    Raises :class:`ConfigError` naming ``SAFETY_CHECKER_PATH`` when there is
    none or its layout is wrong.
    """
    folder = Path(value).expanduser()
    if not folder.is_dir():
        snapshot = cached_snapshot(value, "config.json") if value.count("/") == 1 else None
        if snapshot is None:
            raise ConfigError(
                f"{SETTING}={value}: not a local folder, nor a hub id in the local hub "
                f"cache {hub_cache_dir()}"
            )
        folder = snapshot
    _check(value, folder)
    return folder


def _check(value: str, folder: Path) -> None:
    problem = checker_folder_problem(folder)
    if problem:
        raise ConfigError(
            f"{SETTING}={value}: {problem}; expected the layout of "
            "CompVis/stable-diffusion-safety-checker"
        )


def check_safety_checker_source(settings: Settings) -> None:
    """Refuse a local ``SAFETY_CHECKER_PATH`` that is missing or malformed.

    Quick and torch-free, for start-up before anything loads; an ``s3://``
    prefix is checked once fetched (:func:`resolve_safety_checker`).
    """
    value = settings.safety_checker_path
    if value and not is_s3_uri(value):
        local_checker_folder(value)


async def resolve_safety_checker(
    settings: Settings, *, cache: ArtifactCache | None = None
) -> str | None:
    """The local folder of the configured checker, fetched from S3 if need be; ``None`` when off."""
    value = settings.safety_checker_path
    if not value:
        return None
    if not is_s3_uri(value):
        return str(local_checker_folder(value))
    cache = cache or ArtifactCache(settings.model_cache_dir, region=settings.aws_region)
    try:
        folder = await cache.fetch_folder(value)
    except ConfigError as error:
        raise ConfigError(f"{SETTING}={value}: {error.message}") from None
    _check(value, folder)
    return str(folder)
