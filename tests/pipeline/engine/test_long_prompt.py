"""Whole prompts: window-by-window encoding for both SDXL text encoders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.api.spec import JobKind
from pipeline.engine.generator import SDXLGenerator
from pipeline.engine.text.long_prompt import (
    WINDOW_TEXT_TOKENS,
    encode_prompts,
    text_token_ids,
    token_windows,
)
from tests.support.assets import long_story, noise_picture, one, pixels
from tests.support.specs import spec

AVATAR = noise_picture(1)
SHORT_TEXTS = ["", "a picnic by the lake", "professional sketch, monochrome, " * 12]


@pytest.mark.parametrize("prompt", SHORT_TEXTS)
@pytest.mark.parametrize("negative", ["", "error, glitch"])
def test_up_to_one_window_it_is_diffusers_own_encoding(
    tiny: SDXLGenerator, prompt: str, negative: str
) -> None:
    pipe = tiny.pipeline
    assert len(text_token_ids(pipe.tokenizer, prompt)) <= WINDOW_TEXT_TOKENS
    ours = encode_prompts(pipe, prompt, negative)
    theirs = pipe.encode_prompt(prompt, do_classifier_free_guidance=True, negative_prompt=negative)
    assert ours.negative_prompt_embeds is not None
    assert ours.negative_pooled_prompt_embeds is not None
    for mine, diffusers_own in zip(
        (
            ours.prompt_embeds,
            ours.negative_prompt_embeds,
            ours.pooled_prompt_embeds,
            ours.negative_pooled_prompt_embeds,
        ),
        theirs,
        strict=True,
    ):
        assert mine.shape == diffusers_own.shape
        assert torch.allclose(mine, diffusers_own, atol=1e-6)


@pytest.mark.parametrize("prompt", SHORT_TEXTS)
def test_without_guidance_it_is_diffusers_own_encoding(tiny: SDXLGenerator, prompt: str) -> None:
    pipe = tiny.pipeline
    ours = encode_prompts(pipe, prompt, None)
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
        prompt, do_classifier_free_guidance=False
    )
    assert negative is None
    assert negative_pooled is None
    assert ours.negative_prompt_embeds is None
    assert ours.negative_pooled_prompt_embeds is None
    assert set(ours.as_arguments()) == {"prompt_embeds", "pooled_prompt_embeds"}
    assert torch.allclose(ours.prompt_embeds, embeds, atol=1e-6)
    assert torch.allclose(ours.pooled_prompt_embeds, pooled, atol=1e-6)


def test_long_text_is_every_window_and_the_negative_matches_its_length(
    tiny: SDXLGenerator,
) -> None:
    pipe = tiny.pipeline
    story = long_story(2000)
    tokens = len(text_token_ids(pipe.tokenizer, story))
    windows = token_windows(pipe.tokenizer_2, story)
    assert len(windows) == -(-tokens // WINDOW_TEXT_TOKENS) > 1
    assert all(len(window) == 77 for window in windows)
    # Every text token is in a window, in order, each window in start and end tokens.
    text = [i for window in windows for i in window[1:] if i not in (49407, 0)]
    assert text == text_token_ids(pipe.tokenizer_2, story)
    ours = encode_prompts(pipe, story, "blurry")
    assert ours.negative_prompt_embeds is not None
    assert ours.prompt_embeds.shape == (1, 77 * len(windows), 64)
    assert ours.negative_prompt_embeds.shape == ours.prompt_embeds.shape
    # The first window and the pooled embedding are the first 75 tokens' own.
    first = pipe.tokenizer.decode(windows[0][1:76])
    head = encode_prompts(pipe, first, None)
    assert torch.allclose(ours.prompt_embeds[:, :77], head.prompt_embeds, atol=1e-5)
    assert torch.allclose(ours.pooled_prompt_embeds, head.pooled_prompt_embeds, atol=1e-5)
    # A long negative pads the prompt instead.
    swapped = encode_prompts(pipe, "blurry", story)
    assert swapped.prompt_embeds.shape == ours.prompt_embeds.shape


def test_a_2000_character_story_is_about_400_tokens(tiny: SDXLGenerator) -> None:
    tokens = len(text_token_ids(tiny.pipeline.tokenizer, long_story(2000)))
    assert 300 < tokens < 500


@pytest.mark.parametrize("kind", [JobKind.MEMORY, JobKind.SUBJECT])
def test_last_words_of_a_2000_character_prompt_change_the_picture(
    tiny: SDXLGenerator, kind: JobKind
) -> None:
    story = long_story(2000)
    ending = story[: -len("rose garden")] + "stormy ocean"
    first = pixels(one(tiny, spec(kind=kind, prompt=story), AVATAR))
    second = pixels(one(tiny, spec(kind=kind, prompt=ending), AVATAR))
    # Two tokens of some 450 in a random-weight model: a small but real change.
    assert np.abs(first - second).mean() > 0.01


@pytest.mark.parametrize("length", [800, 2000])
def test_style_prompt_of_a_long_story_changes_the_picture(tiny: SDXLGenerator, length: int) -> None:
    story = long_story(length)
    sketch = pixels(one(tiny, spec(prompt=story, style_prompt="pencil sketch"), AVATAR))
    oil = pixels(one(tiny, spec(prompt=story, style_prompt="oil painting"), AVATAR))
    assert np.abs(sketch - oil).mean() > 0.01


def test_negative_prompt_is_ignored_without_guidance(tiny: SDXLGenerator) -> None:
    for scale in (1.0, 0.5):
        plain = pixels(one(tiny, spec(guidance_scale=scale, negative_prompt=""), AVATAR))
        other = pixels(one(tiny, spec(guidance_scale=scale, negative_prompt="dark"), AVATAR))
        assert np.array_equal(plain, other)
