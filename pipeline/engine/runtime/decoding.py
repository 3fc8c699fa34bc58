"""The decode stage: latents to pictures, one picture at a time, ending on the host as bytes.

The pipeline stops at the latents (``output_type="latent"``); what diffusers
0.42's SDXL pipeline would do next is done here, with its memory bounded:

- one picture at a time: the decoder's widest layers hold about 2 GiB per
  1024x1024 picture, so four at once would need four times that;
- in tiles above ``vae_tiling_pixels`` (diffusers' tiled decode, whose tiles
  blend at their seams), so a 2048x2048 picture needs no more than a
  1024x1024 one;
- in the VAE's own precision, fixed at load
  (:func:`~pipeline.engine.runtime.placement.vae_dtype`): no cast
  of the VAE per job, so a failed decode leaves nothing to undo;
- to 8-bit RGB on the device, so about 3 MB per 1024x1024 picture cross to
  the host, not a float32 tensor four times that, and the safety checker
  takes its input from the same device tensor (:attr:`Decoded.pixels`).

The arithmetic is diffusers': latents divided by the VAE's scaling factor
(or unnormalised with its latents mean and std), decoded, mapped from
[-1, 1] to [0, 1], clamped, times 255, rounded to nearest even.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from pipeline.engine.runtime.placement import set_vae_tiling
from pipeline.engine.untyped import SDXLPipeline


@dataclass
class Decoded:
    """A job's decoded pictures: on the device as 8-bit RGB, then on the host."""

    pixels: list[torch.Tensor]
    """One ``(height, width, 3)`` uint8 tensor per picture, on the device."""

    def pictures(self) -> list[Image.Image]:
        """The pictures on the host (one copy of the 8-bit pixels each)."""
        return [Image.fromarray(_host_array(p)) for p in self.pixels]


def _host_array(pixels: torch.Tensor) -> np.ndarray:
    array: np.ndarray = pixels.cpu().numpy()
    return array


class Decoder:
    """Decodes a job's latents with the pipeline's VAE, one picture at a time."""

    def __init__(self, pipe: SDXLPipeline, tiling_pixels: int | None) -> None:
        self._pipe = pipe
        self._tiling_pixels = tiling_pixels

    def decode(self, latents: torch.Tensor) -> Decoded:
        """Each picture of `latents` (``(n, 4, h, w)``) as 8-bit RGB on the device."""
        vae = self._pipe.vae
        scale = int(self._pipe.vae_scale_factor)
        height, width = (side * scale for side in latents.shape[-2:])
        set_vae_tiling(self._pipe, width * height, self._tiling_pixels)
        dtype = vae.dtype
        pixels = []
        with torch.inference_mode():
            for index in range(latents.shape[0]):
                latent = _unscaled(vae.config, latents[index : index + 1].to(dtype))
                image = vae.decode(latent, return_dict=False)[0]
                pixels.append(_to_pixels(image))
        return Decoded(pixels)


def _unscaled(config: Any, latents: torch.Tensor) -> torch.Tensor:
    mean = getattr(config, "latents_mean", None)
    std = getattr(config, "latents_std", None)
    factor = config.scaling_factor
    if mean is not None and std is not None:
        shape = (1, latents.shape[1], 1, 1)
        mean_t = torch.tensor(mean).view(shape).to(latents.device, latents.dtype)
        std_t = torch.tensor(std).view(shape).to(latents.device, latents.dtype)
        return latents * std_t / float(factor) + mean_t
    return latents / float(factor)


def _to_pixels(image: torch.Tensor) -> torch.Tensor:
    # diffusers' VaeImageProcessor.postprocess, on the device: denormalise
    # in the VAE's precision, then float32 for the scaling and rounding.
    unit = (image * 0.5 + 0.5).clamp(0, 1).float()
    pixels = (unit * 255).round().to(torch.uint8)
    return pixels[0].permute(1, 2, 0).contiguous()
