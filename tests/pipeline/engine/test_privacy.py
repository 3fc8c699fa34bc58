"""Prompt texts are personal: generating never writes them anywhere."""

from __future__ import annotations

import logging

import pytest
import structlog

from pipeline.api.spec import JobKind
from pipeline.engine.generator import SDXLGenerator
from tests.support.assets import long_story, noise_picture, one
from tests.support.specs import spec

SECRET = "quokkamarmalade"


@pytest.mark.parametrize("kind", [JobKind.MEMORY, JobKind.SUBJECT])
def test_long_prompts_reach_no_log_and_no_output(
    tiny: SDXLGenerator,
    kind: JobKind,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # The secret word at the end of each text, past the first 77 tokens,
    # where diffusers' truncation warning used to quote it.
    story = long_story(2000) + " " + SECRET
    job = spec(
        kind=kind,
        prompt=story,
        style_prompt=long_story(600) + " " + SECRET,
        negative_prompt=long_story(600) + " " + SECRET,
    )
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as events:
        one(tiny, job, noise_picture(1))
    out, err = capfd.readouterr()
    assert SECRET not in out
    assert SECRET not in err
    assert not any(SECRET in record.getMessage() for record in caplog.records)
    assert not any(SECRET in str(event) for event in events)
