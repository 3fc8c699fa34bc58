"""The CLIP image preprocessor the IP-Adapter's image encoder expects."""

from __future__ import annotations

from typing import Any

from pipeline.engine.untyped import transformers


def clip_feature_extractor(image_size: int) -> Any:
    """A CLIP preprocessor: resize the short side, centre-crop, normalise.

    The IP-Adapter folders ship the encoder without a preprocessor config, so
    it is built here from the encoder's input size. The Pillow backend is
    preferred because it needs no torchvision, which the CUDA torch wheels do
    not bring; transformers before 5 has only the one class.
    """
    processor_class = getattr(transformers, "CLIPImageProcessorPil", None)
    if processor_class is None:
        processor_class = transformers.CLIPImageProcessor
    return processor_class(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
