"""Choosing the generator that `MODEL_PATH` names."""

from __future__ import annotations

from pipeline.api.config import BUILTIN_BLANK, BUILTIN_TINY, PipelineConfig
from pipeline.api.errors import ModelLoadError
from pipeline.api.interface import Generator
from pipeline.api.safety import PictureChecker
from pipeline.builtin.blank import BlankGenerator


def create_generator(config: PipelineConfig) -> Generator:
    """The generator for `config`, not yet loaded: call ``load()`` (in a thread).

    ``builtin:blank`` gives the :class:`~pipeline.builtin.blank.BlankGenerator`;
    ``builtin:tiny`` and every other model path give the
    :class:`~pipeline.engine.generator.SDXLGenerator`, fed by the tiny source or by the
    local folder / hub cache. torch and diffusers are imported only for those,
    so the blank generator starts instantly.
    """
    if config.model_path == BUILTIN_BLANK:
        return BlankGenerator(config.blank_latency_ms)
    from pipeline.engine.generator import SDXLGenerator

    if config.model_path == BUILTIN_TINY:
        from pipeline.builtin.tiny import TinySource

        if config.subject_ip_adapter_weight_name:
            raise ModelLoadError("builtin:tiny has one IP-Adapter; a subject adapter needs a model")
        return SDXLGenerator(config, TinySource(config.weights_file, config.vae_path))
    from pipeline.engine.weights.loading import PretrainedSource

    return SDXLGenerator(config, PretrainedSource(config))


def load_safety_checker(path: str, *, device: str | None, dtype: str | None) -> PictureChecker:
    """The safety checker in local folder `path`, loaded (call it on the GPU thread).

    torch and transformers are imported only here, when a checker is asked
    for; a missing or malformed folder raises :class:`ModelLoadError`.
    """
    from pipeline.engine.safety_checker import SafetyChecker

    checker = SafetyChecker(path, device=device, dtype=dtype)
    checker.load()
    return checker
