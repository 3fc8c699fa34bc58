"""diffusers and transformers, seen by the type checker as untyped.

Both libraries build their public classes lazily and are only partly
annotated, so strict mypy would flag every call into them. They are used
through these ``Any`` names instead, which keeps the rest of the package
strictly checked without a ``type: ignore`` on each line.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import diffusers as _diffusers
import transformers as _transformers
from packaging.version import Version

diffusers: Any = _diffusers
transformers: Any = _transformers

SDXLPipeline: TypeAlias = Any
"""A ``diffusers.StableDiffusionXLPipeline``."""


def _at_least(version: str, minimum: tuple[int, int]) -> bool:
    # By release numbers only, so a pre-release of the minimum counts.
    return Version(version).release >= minimum


# Both libraries renamed ``torch_dtype`` to ``dtype``; the old name still works
# but warns, and an older release would silently ignore the new one.
_DIFFUSERS_DTYPE = "dtype" if _at_least(_diffusers.__version__, (0, 42)) else "torch_dtype"
_TRANSFORMERS_DTYPE = "dtype" if _at_least(_transformers.__version__, (4, 56)) else "torch_dtype"


def diffusers_dtype(dtype: Any) -> dict[str, Any]:
    """The keyword that sets the precision of a diffusers ``from_pretrained``."""
    return {_DIFFUSERS_DTYPE: dtype}


def transformers_dtype(dtype: Any) -> dict[str, Any]:
    """The keyword that sets the precision of a transformers ``from_pretrained``."""
    return {_TRANSFORMERS_DTYPE: dtype}
