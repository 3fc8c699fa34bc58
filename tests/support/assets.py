"""Test assets made in code: the tiny model on disk, a tiny LoRA, specs, pictures."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from pipeline.api.config import BUILTIN_MODELS, PipelineConfig
from pipeline.api.factory import create_generator
from pipeline.api.interface import Generator
from pipeline.api.spec import GenerationSpec
from pipeline.builtin.tiny import build_tiny
from pipeline.builtin.tiny_lora import save_tiny_lora
from pipeline.engine.generator import SDXLGenerator


def load_generator(config: PipelineConfig) -> SDXLGenerator:
    """A loaded SDXL generator for `config` (the tiny model loads in well under a second).

    A model read from files is a real model to the generator, which then
    needs a GPU unless a device is named; where the configuration names none,
    it runs on this machine's CPU (as ``DEVICE=cpu`` would have it).
    """
    if config.device is None and config.model_path not in BUILTIN_MODELS:
        config = dataclasses.replace(config, device="cpu")
    generator = create_generator(config)
    assert isinstance(generator, SDXLGenerator)
    generator.load()
    return generator


def portrait() -> Image.Image:
    """A real photograph of a face (Grace Hopper, shipped with matplotlib)."""
    path = Path(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    return Image.open(path).convert("RGB")


def tall_photo() -> Image.Image:
    """The portrait at the top of a tall 768x1344 canvas, as phone photos are."""
    canvas = Image.new("RGB", (768, 1344), (40, 60, 80))
    canvas.paste(portrait().resize((384, 450)), (192, 0))
    return canvas


def noise_picture(seed: int, size: tuple[int, int] = (96, 80)) -> Image.Image:
    """A random RGB picture, different for each seed."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def pixels(image: Image.Image) -> np.ndarray[Any, Any]:
    """The picture as an int array, for comparisons."""
    return np.asarray(image, dtype=np.int16)


# Pictures drawn by two model instances (built in code and loaded from disk,
# say) may differ by rounding on another CPU: 1 level of 255 in 2 of 100,000
# pixels was seen on an AMD EPYC. Exact equality holds only within one instance.
INSTANCE_TOLERANCE = 1


def close(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> bool:
    """Whether two pictures' pixels (from :func:`pixels`) differ by at most
    :data:`INSTANCE_TOLERANCE` anywhere."""
    return a.shape == b.shape and int(np.abs(a - b).max()) <= INSTANCE_TOLERANCE


def make_tiny_lora(path: Path, seed: int = 7, **options: Any) -> Path:
    """A LoRA for the tiny UNet (see :func:`pipeline.builtin.tiny_lora.save_tiny_lora`)."""
    return save_tiny_lora(path, seed, **options)


def make_finetuned_unet(path: Path, seed: int = 11) -> Path:
    """A "fine-tuned" tiny UNet: the tiny UNet's state dict, every tensor nudged."""
    state = build_tiny().pipe.unet.state_dict()
    generator = torch.Generator().manual_seed(seed)
    tuned = {
        name: (tensor + 0.05 * torch.randn(tensor.shape, generator=generator)).contiguous()
        for name, tensor in state.items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tuned, str(path))
    return path


def one(generator: Generator, job: GenerationSpec, image: Image.Image) -> Image.Image:
    """The single picture a one-picture `job` draws."""
    [picture] = generator.generate(job, image)
    return picture


def alike(a: Image.Image, b: Image.Image) -> bool:
    """Whether two pictures are the same within :data:`INSTANCE_TOLERANCE`."""
    return close(pixels(a), pixels(b))


def draw_alike(a: Generator, b: Generator, job: GenerationSpec, image: Image.Image) -> bool:
    """Whether `a` and `b` draw the one-picture `job` alike (see :func:`alike`)."""
    return alike(one(a, job, image), one(b, job, image))


def load_saved(model_dir: Path, ip_dir: Path, **fields: Any) -> SDXLGenerator:
    """The tiny model saved at `model_dir` with its IP-Adapter at `ip_dir`,
    loaded without a warm-up, `fields` over its configuration."""
    config = PipelineConfig(
        model_path=str(model_dir), ip_adapter_path=str(ip_dir), warmup=False, **fields
    )
    return load_generator(config)


_STORY_TEXT = (
    "we walked along the river every sunday with grandmother who told us stories about "
    "the long winter the bakery on the corner her brother at sea and the old mill"
)


def long_story(length: int) -> str:
    """A life story of exactly `length` characters that ends in "rose garden"."""
    vocabulary = _STORY_TEXT.split()
    words: list[str] = []
    ending = " rose garden"
    while len(" ".join(words)) < length - len(ending):
        words.append(vocabulary[len(words) % len(vocabulary)])
    text = " ".join(words)[: length - len(ending)].rstrip()
    return (text + ending).rjust(length, "a")
