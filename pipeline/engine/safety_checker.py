"""The safety checker: diffusers' ``StableDiffusionSafetyChecker`` on decoded pictures.

Read from a folder in the layout of ``CompVis/stable-diffusion-safety-checker``
(``config.json``, the weights, ``preprocessor_config.json``), or that hub id
from the local hub cache; never downloaded here (the consumer fetches
``s3://`` folders first). It runs on the generator's device, on the GPU
thread, on the whole decoded batch at once.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Sequence
from typing import Any

import structlog
import torch
from PIL import Image

from pipeline.api.errors import ModelLoadError
from pipeline.api.safety import checker_folder_problem
from pipeline.engine.runtime.device import choose_device, choose_dtype
from pipeline.engine.untyped import transformers, transformers_dtype
from pipeline.engine.weights.loading import model_folder

log = structlog.get_logger(__name__)


CHECKER_MODULE = "diffusers.pipelines.stable_diffusion.safety_checker"


def checker_class() -> Any:
    """diffusers' ``StableDiffusionSafetyChecker`` (not exported at the package's top)."""
    module = importlib.import_module(CHECKER_MODULE)
    # Its one warning says a black picture replaces a flagged one, which is
    # not what happens here: flagged pictures are redrawn or refused.
    logging.getLogger(CHECKER_MODULE).setLevel(logging.ERROR)
    return module.StableDiffusionSafetyChecker


def processor_class() -> Any:
    """The CLIP image preprocessor class of the checker's ``preprocessor_config.json``."""
    # The Pillow backend needs no torchvision, which the CUDA torch wheels do
    # not bring; transformers before 5 has only the one class.
    return getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor


class SafetyChecker:
    """``StableDiffusionSafetyChecker`` + ``CLIPImageProcessor``, loaded once.

    :meth:`check` answers one flag per picture, as diffusers' Stable
    Diffusion pipelines compute ``has_nsfw_concept``.
    """

    def __init__(self, path: str, *, device: str | None = None, dtype: str | None = None) -> None:
        self.path = path
        self._requested_device = device
        self._requested_dtype = dtype
        self._device = torch.device("cpu")
        self._dtype = torch.float32
        self._model: Any = None
        self._processor: Any = None
        self.load_seconds: float | None = None

    @property
    def parameters(self) -> int:
        """The loaded model's parameter count."""
        if self._model is None:
            raise ModelLoadError("the safety checker is not loaded")
        return sum(int(p.numel()) for p in self._model.parameters())

    def load(self) -> None:
        """Read the checker and its preprocessor; place it on the device.

        Raises :class:`~pipeline.api.errors.ModelLoadError` with one line saying
        what is missing or malformed.
        """
        started = time.perf_counter()
        folder = model_folder(self.path)
        if folder is None:
            raise ModelLoadError(
                f"{self.path!r} is neither a local folder nor a hub id in the local hub cache"
            )
        problem = checker_folder_problem(folder)
        if problem:
            raise ModelLoadError(f"{self.path!r}: {problem}")
        self._device = choose_device(self._requested_device)
        self._dtype = choose_dtype(self._device, self._requested_dtype)
        try:
            # Never downloads: local_files_only reads the local folder or hub cache.
            model = checker_class().from_pretrained(
                str(folder), local_files_only=True, **transformers_dtype(self._dtype)
            )
            processor = processor_class().from_pretrained(str(folder), local_files_only=True)
        # Whatever a damaged folder makes the readers raise (safetensors'
        # own error is no OSError): at start-up it is the folder's fault.
        except Exception as error:
            raise ModelLoadError(
                f"{self.path!r}: cannot load the safety checker: {error}"
            ) from error
        self._model = model.to(self._device).eval()
        self._processor = processor
        self.load_seconds = time.perf_counter() - started
        log.info(
            "safety_checker_ready",
            device=str(self._device),
            dtype=str(self._dtype).removeprefix("torch."),
            parameters=self.parameters,
            load_seconds=round(self.load_seconds, 3),
        )

    def check(self, pictures: Sequence[Image.Image]) -> list[bool]:
        """One flag per picture: True when a concept's score passes its threshold."""
        if self._model is None:
            raise ModelLoadError("the safety checker is not loaded; call load() first")
        if not pictures:
            return []
        inputs = self._processor(images=list(pictures), return_tensors="pt")
        clip_input = inputs["pixel_values"].to(self._device, self._dtype)
        # The checker blacks out flagged entries of `images`; a placeholder
        # tensor keeps it from copying the decoded pictures.
        placeholder = torch.zeros(len(pictures), 1)
        with torch.inference_mode():
            _, flags = self._model(clip_input=clip_input, images=placeholder)
        return [bool(flag) for flag in flags]
