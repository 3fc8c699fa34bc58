"""The generation spec the tests start from (torch-free, so the unit layer can use it)."""

from __future__ import annotations

import dataclasses
from typing import Any

from pipeline.api.spec import GenerationSpec, JobKind

BASE_SPEC = GenerationSpec(
    kind=JobKind.MEMORY,
    prompt="a picnic by the lake",
    style_prompt="professional sketch, monochrome",
    negative_prompt="error, glitch",
    num_inference_steps=2,
    ip_adapter_scale=0.8,
    guidance_scale=5.0,
    seed=1234,
    width=128,
    height=128,
)


def spec(**changes: Any) -> GenerationSpec:
    """The base spec with `changes`."""
    return dataclasses.replace(BASE_SPEC, **changes)
