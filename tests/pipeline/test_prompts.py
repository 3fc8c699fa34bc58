"""The prompt each kind of job sends to the model."""

from __future__ import annotations

from pipeline.prompts import SUBJECT_LEAD, compose_prompt
from pipeline.spec import JobKind
from tests.pipeline.assets import spec


def test_memory_draws_the_prompt_in_the_style() -> None:
    job = spec(kind=JobKind.MEMORY, prompt="a picnic", style_prompt="sketch, monochrome")
    assert compose_prompt(job) == "a picnic, sketch, monochrome"


def test_subject_is_a_portrait_in_the_style_plus_the_prompt() -> None:
    job = spec(kind=JobKind.SUBJECT, prompt="smiling", style_prompt="sketch")
    assert compose_prompt(job) == f"{SUBJECT_LEAD}, sketch, smiling"


def test_subject_without_prompt() -> None:
    job = spec(kind=JobKind.SUBJECT, prompt="", style_prompt="sketch")
    assert compose_prompt(job) == f"{SUBJECT_LEAD}, sketch"


def test_empty_style_is_left_out() -> None:
    assert compose_prompt(spec(prompt="a picnic", style_prompt="  ")) == "a picnic"
