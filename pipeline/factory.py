"""Choosing the generator that `MODEL_PATH` names."""

from __future__ import annotations

from pipeline.blank import BlankGenerator
from pipeline.config import BUILTIN_BLANK, BUILTIN_TINY, PipelineConfig
from pipeline.errors import ModelLoadError
from pipeline.interface import Generator


def create_generator(config: PipelineConfig) -> Generator:
    """The generator for `config`, not yet loaded: call ``load()`` (in a thread).

    ``builtin:blank`` gives the :class:`~pipeline.blank.BlankGenerator`;
    ``builtin:tiny`` and every other model path give the
    :class:`~pipeline.sdxl.SDXLGenerator`, fed by the tiny source or by the
    local folder / hub cache. torch and diffusers are imported only for those,
    so the blank generator starts instantly.
    """
    if config.model_path == BUILTIN_BLANK:
        return BlankGenerator(config.blank_latency_ms)
    from pipeline.sdxl import SDXLGenerator

    if config.model_path == BUILTIN_TINY:
        from pipeline.tiny import TinySource

        if config.subject_ip_adapter_weight_name:
            raise ModelLoadError("builtin:tiny has one IP-Adapter; a subject adapter needs a model")
        return SDXLGenerator(config, TinySource(config.weights_file, config.vae_path))
    from pipeline.loading import PretrainedSource

    return SDXLGenerator(config, PretrainedSource(config))
