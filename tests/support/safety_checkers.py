"""Small real safety checkers for tests, saved in the CompVis layout.

Each is diffusers' ``StableDiffusionSafetyChecker`` built from a tiny
``CLIPConfig``; only its concept embeddings and thresholds differ, and they
decide what it flags: every picture, none, or pictures whose CLIP image
embedding is close to that of a given picture. The same weights (a fixed
torch seed) are saved, so an embedding computed here is the one the loaded
checker computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from pipeline.engine.safety_checker import checker_class, processor_class
from pipeline.engine.untyped import transformers

IMAGE_SIZE = 32
PROJECTION_DIM = 16
CONCEPTS, SPECIAL = 17, 3
# Cosine similarity is within [-1, 1]: a threshold below -1 is always
# passed, one above 1 never.
ALWAYS, NEVER = -2.0, 2.0


def tiny_clip_config() -> Any:
    """A CLIP configuration small enough to run in milliseconds on a CPU."""
    text = {
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "vocab_size": 100,
        "max_position_embeddings": 16,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 1,
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": IMAGE_SIZE,
        "patch_size": 8,
    }
    return transformers.CLIPConfig(
        text_config=text, vision_config=vision, projection_dim=PROJECTION_DIM
    )


def _processor() -> Any:
    return processor_class()(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )


def _model() -> Any:
    torch.manual_seed(0)
    return checker_class()(tiny_clip_config()).eval()


def embedding(picture: Image.Image) -> torch.Tensor:
    """The image embedding the tiny checker computes for `picture`."""
    model, inputs = _model(), _processor()(images=[picture], return_tensors="pt")
    with torch.inference_mode():
        pooled = model.vision_model(inputs["pixel_values"])[1]
        return model.visual_projection(pooled)[0].clone()


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two embeddings."""
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def save_checker(
    folder: Path,
    *,
    concept_weights: Sequence[float] = (NEVER,) * CONCEPTS,
    concept_embeds: torch.Tensor | None = None,
) -> Path:
    """A checker at `folder` with these thresholds (special-care concepts never match)."""
    model = _model()
    with torch.no_grad():
        model.concept_embeds_weights.copy_(torch.tensor(list(concept_weights)))
        model.special_care_embeds_weights.fill_(NEVER)
        if concept_embeds is not None:
            model.concept_embeds.copy_(concept_embeds)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    _processor().save_pretrained(folder)
    return folder


def flag_all(folder: Path) -> Path:
    """A checker that flags every picture."""
    return save_checker(folder, concept_weights=(ALWAYS,) * CONCEPTS)


def flag_none(folder: Path) -> Path:
    """A checker that flags no picture."""
    return save_checker(folder)


def flag_like(folder: Path, picture: Image.Image, threshold: float) -> Path:
    """A checker that flags pictures whose embedding's cosine to `picture`'s passes `threshold`."""
    embeds = torch.ones(CONCEPTS, PROJECTION_DIM)
    embeds[0] = embedding(picture)
    weights = [threshold] + [NEVER] * (CONCEPTS - 1)
    return save_checker(folder, concept_weights=weights, concept_embeds=embeds)
