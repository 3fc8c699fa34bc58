"""The prompt each kind of job sends to the model."""

from __future__ import annotations

from pipeline.api.spec import JobKind, uses_negative_prompt
from pipeline.engine.text.prompts import SUBJECT_LEAD, compose_prompt
from tests.support.specs import spec


def test_memory_puts_the_style_before_the_story() -> None:
    job = spec(kind=JobKind.MEMORY, prompt="a picnic", style_prompt="sketch, monochrome")
    assert compose_prompt(job) == "sketch, monochrome, a picnic"


def test_subject_is_a_portrait_in_the_style_plus_the_prompt() -> None:
    job = spec(kind=JobKind.SUBJECT, prompt="smiling", style_prompt="sketch")
    assert compose_prompt(job) == f"{SUBJECT_LEAD}, sketch, smiling"


def test_subject_without_prompt() -> None:
    job = spec(kind=JobKind.SUBJECT, prompt="", style_prompt="sketch")
    assert compose_prompt(job) == f"{SUBJECT_LEAD}, sketch"


def test_empty_style_is_left_out() -> None:
    assert compose_prompt(spec(prompt="a picnic", style_prompt="  ")) == "a picnic"


def test_style_of_a_long_story_stays_in_the_first_window() -> None:
    story = "we walked along the river every sunday " * 50
    for kind in JobKind:
        composed = compose_prompt(spec(kind=kind, prompt=story, style_prompt="watercolour"))
        assert composed.index("watercolour") < 40
        assert composed.endswith(story.strip())


def test_negative_prompt_is_used_only_above_guidance_one() -> None:
    assert not uses_negative_prompt(0.0)
    assert not uses_negative_prompt(1.0)
    assert uses_negative_prompt(1.01)
    assert uses_negative_prompt(5.0)
