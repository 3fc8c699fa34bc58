"""Where an SDXL generator gets its components: the model sources.

A source builds the base ``StableDiffusionXLPipeline`` and hands over the
IP-Adapter parts; everything after that (IP-Adapter and LoRA loading, device,
precision, warm-up, generation) is the one code path of
:class:`pipeline.engine.generator.SDXLGenerator`, whichever source fed it.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.engine.untyped import SDXLPipeline

IPAdapterStateDict = dict[str, dict[str, torch.Tensor]]


@dataclass
class IPAdapterParts:
    """What ``load_ip_adapter`` needs, with the image encoder already loaded.

    Attributes:
        weights: the IP-Adapter state dict (``image_proj`` and ``ip_adapter``
            groups), or a local folder or hub id holding the weights file.
        image_encoder: the CLIP vision encoder the adapter was trained with.
        feature_extractor: the CLIP preprocessor for that encoder.
        subfolder: where the weights file lies under ``weights`` (paths only).
        weight_name: the weights file's name (paths only).
        subject_weight_name: a second weights file beside it, loaded as a
            second adapter for subject jobs (paths only); ``None`` for none.
    """

    weights: IPAdapterStateDict | str
    image_encoder: Any
    feature_extractor: Any
    subfolder: str = ""
    weight_name: str = ""
    subject_weight_name: str | None = None


class ModelSource(abc.ABC):
    """Builds the components of one SDXL model."""

    name: str
    expected_native_size: tuple[int, int]

    @abc.abstractmethod
    def base_pipeline(self, dtype: torch.dtype) -> SDXLPipeline:
        """The pipeline without IP-Adapter or LoRA, on the CPU, in `dtype`."""

    @abc.abstractmethod
    def ip_adapter(self, dtype: torch.dtype) -> IPAdapterParts:
        """The IP-Adapter weights and image encoder (encoder in `dtype`)."""
