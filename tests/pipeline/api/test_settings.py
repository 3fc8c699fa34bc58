"""The torch-free validators the consumer's settings call, and the pixel budget."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.api.batch import DEFAULT_MAX_BATCH_PIXELS, batch_pixels, image_seeds
from pipeline.api.config import (
    BUILTIN_TINY,
    SCHEDULERS,
    PipelineConfig,
    check_scheduler,
    check_timestep_spacing,
    check_torch_compile_mode,
)
from tests.support.specs import spec


def test_validators_and_budget_import_without_torch() -> None:
    code = (
        "import sys, pipeline.api.config, pipeline.api.batch, pipeline.api.spec\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", [*SCHEDULERS, None])
def test_known_schedulers_pass(name: str | None) -> None:
    assert check_scheduler(name) == name


def test_diffusers_class_names_are_the_scheduler_names() -> None:
    # A recipe copied from a model card names diffusers' class: every allowed
    # name must be one of diffusers' schedulers, and its own class name.
    import diffusers

    for name in SCHEDULERS:
        scheduler = getattr(diffusers, name)
        assert issubclass(scheduler, diffusers.SchedulerMixin)
        assert scheduler.__name__ == name


def test_unknown_scheduler_is_one_line_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown scheduler 'euler'") as caught:
        check_scheduler("euler")
    assert "\n" not in str(caught.value)
    assert "EulerDiscreteScheduler" in str(caught.value)


def test_karras_only_where_the_scheduler_has_it() -> None:
    assert check_scheduler("DPMSolverMultistepScheduler", karras=True)
    assert check_scheduler("EulerDiscreteScheduler", karras=True)
    with pytest.raises(ValueError, match="LCMScheduler has no Karras sigmas"):
        check_scheduler("LCMScheduler", karras=True)


@pytest.mark.parametrize("spacing", ["leading", "linspace", "trailing"])
def test_timestep_spacings(spacing: str) -> None:
    assert check_timestep_spacing(spacing) == spacing


def test_bad_spacing_and_compile_mode_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown timestep spacing 'trail'"):
        check_timestep_spacing("trail")
    assert check_torch_compile_mode("reduce-overhead") == "reduce-overhead"
    assert check_torch_compile_mode(None) is None
    with pytest.raises(ValueError, match=r"unknown torch\.compile mode 'fast'"):
        check_torch_compile_mode("fast")


def test_pipeline_config_checks_its_fields() -> None:
    config = PipelineConfig(model_path=BUILTIN_TINY)
    # Pictures above 1024x1024 decode in tiles unless told otherwise.
    assert (config.scheduler, config.timestep_spacing, config.vae_tiling_pixels) == (
        None,
        "trailing",
        1024 * 1024,
    )
    with pytest.raises(ValueError, match="unknown scheduler"):
        PipelineConfig(model_path=BUILTIN_TINY, scheduler="DPM++ 2M")
    with pytest.raises(ValueError, match="0 or more"):
        PipelineConfig(model_path=BUILTIN_TINY, vae_tiling_pixels=-1)
    with pytest.raises(ValueError, match="compile size"):
        PipelineConfig(model_path=BUILTIN_TINY, torch_compile_sizes="1024x1000")


def test_batch_pixels_and_seeds() -> None:
    job = spec(num_images=3, width=1024, height=768, seed=2**32 - 1)
    assert batch_pixels(job) == 3 * 1024 * 768
    assert image_seeds(job) == [2**32 - 1, 0, 1]
    assert image_seeds(spec()) == [1234]
    assert DEFAULT_MAX_BATCH_PIXELS == 4 * 1024 * 1024
    assert batch_pixels(spec(num_images=4, width=1024, height=1024)) <= DEFAULT_MAX_BATCH_PIXELS
