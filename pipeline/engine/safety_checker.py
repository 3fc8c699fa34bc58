"""The safety checker: diffusers' ``StableDiffusionSafetyChecker`` on decoded pictures.

Read from a folder in the layout of ``CompVis/stable-diffusion-safety-checker``
(``config.json``, the weights, ``preprocessor_config.json``), or that hub id
from the local hub cache; never downloaded here (the consumer fetches
``s3://`` folders first). It runs on the generator's device, on the GPU
thread, on the whole decoded batch at once.

On a GPU it runs in float16, whatever the generator's precision: its
concept scores are cosine similarities compared with thresholds after
rounding to three decimals, which bfloat16's 8-bit mantissa (steps of 0.001
near 0.2) would decide by rounding, while float16 (steps of 0.0001) leaves to
the picture, as diffusers' own fp16 pipelines do.

Its input is prepared from the decoded 8-bit pictures where they are, on the
device (:meth:`SafetyChecker.check_pixels`), as the checker's CLIP image
processor prepares a picture: the shorter side resized to its size with
Pillow's bicubic filter (two antialiased passes in Pillow's order, rounded to
8 bits between and after them, as Pillow does), centre-cropped, rescaled and
normalised.
:meth:`SafetyChecker.check` takes Pillow pictures through the processor
itself.
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


def checker_dtype(device: torch.device, requested: str | None) -> torch.dtype:
    """float16 on a GPU unless float32 is asked for; else the requested, or float32."""
    if device.type == "cuda":
        asked = choose_dtype(device, requested) if requested else None
        return torch.float32 if asked == torch.float32 else torch.float16
    return choose_dtype(device, requested)


class SafetyChecker:
    """``StableDiffusionSafetyChecker`` + ``CLIPImageProcessor``, loaded once.

    :meth:`check` and :meth:`check_pixels` answer one flag per picture, as
    diffusers' Stable Diffusion pipelines compute ``has_nsfw_concept``.
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
        self._dtype = checker_dtype(self._device, self._requested_dtype)
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
        return self._flags(inputs["pixel_values"].to(self._device, self._dtype))

    def check_pixels(self, pixels: Sequence[torch.Tensor]) -> list[bool]:
        """One flag per picture given as ``(height, width, 3)`` uint8 tensors of one size.

        Prepared where the tensors are (the device that decoded them).
        """
        if self._model is None:
            raise ModelLoadError("the safety checker is not loaded; call load() first")
        if not pixels:
            return []
        with torch.inference_mode():
            batch = torch.stack(list(pixels)).to(self._device).permute(0, 3, 1, 2).float()
            return self._flags(prepare_clip_input(batch, self._processor).to(self._dtype))

    def _flags(self, clip_input: torch.Tensor) -> list[bool]:
        # The checker blacks out flagged entries of `images`; a placeholder
        # tensor keeps it from copying the decoded pictures.
        placeholder = torch.zeros(clip_input.shape[0], 1)
        with torch.inference_mode():
            _, flags = self._model(clip_input=clip_input, images=placeholder)
        return [bool(flag) for flag in flags]


def prepare_clip_input(batch: torch.Tensor, processor: Any) -> torch.Tensor:
    """`batch` (``(n, 3, h, w)`` values 0-255) prepared as `processor` prepares pictures.

    Resize of the shorter side (``size["shortest_edge"]``, the longer in
    proportion, truncated), centre crop (``crop_size``), rescale and
    normalise, each when the processor's configuration asks for it.
    """
    if processor.do_resize:
        batch = _bicubic_like_pillow(batch, _resized(batch.shape[-2:], processor.size))
    if processor.do_center_crop:
        crop = processor.crop_size
        height, width = batch.shape[-2:]
        top, left = (height - crop["height"]) // 2, (width - crop["width"]) // 2
        batch = batch[..., top : top + crop["height"], left : left + crop["width"]]
    if processor.do_rescale:
        batch = batch * processor.rescale_factor
    if processor.do_normalize:
        mean = torch.tensor(processor.image_mean, device=batch.device).view(1, -1, 1, 1)
        std = torch.tensor(processor.image_std, device=batch.device).view(1, -1, 1, 1)
        batch = (batch - mean) / std
    return batch


def _resized(shape: Sequence[int], size: Any) -> tuple[int, int]:
    height, width = int(shape[0]), int(shape[1])
    shortest = int(size["shortest_edge"])
    if width <= height:
        return int(shortest * height / width), shortest
    return shortest, int(shortest * width / height)


def _bicubic_like_pillow(batch: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    # Pillow resamples in two passes, each with its antialiased bicubic
    # filter (a = -0.5, which torch's antialias shares) and rounded to 8
    # bits; horizontally first, unless the height shrinks by more than twice
    # what the width does (Pillow 13's choice, the cheaper order then).
    height, width = int(batch.shape[-2]), int(batch.shape[-1])
    if size[0] < height and height - size[0] > 2 * (width - size[1]):
        return _resample(_resample(batch, (size[0], width)), size)
    if size[1] != width:
        batch = _resample(batch, (height, size[1]))
    if size[0] != height:
        batch = _resample(batch, size)
    return batch


def _resample(batch: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    resized = torch.nn.functional.interpolate(
        batch, size=size, mode="bicubic", antialias=True, align_corners=False
    )
    return resized.round().clamp(0, 255)
