"""builtin:tiny's tokenizer with CLIP's vocabulary, and without the file that holds it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

import pipeline.builtin.clip_bpe
from pipeline.api.config import BUILTIN_TINY, PipelineConfig
from pipeline.api.errors import ModelLoadError
from pipeline.builtin.clip_bpe import BOS, EOS, VOCAB_SIZE, clip_bpe
from pipeline.builtin.tiny import tiny_tokenizer
from pipeline.engine.text.long_prompt import text_token_ids
from tests.support.assets import load_generator, noise_picture, one
from tests.support.specs import spec

TEXT = "a family picnic by the lake"


@pytest.fixture
def without_clip_file(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """As if open_clip_torch were not installed."""

    def missing() -> None:
        raise ModelLoadError("no open_clip_torch here")

    monkeypatch.setattr(pipeline.builtin.clip_bpe, "bpe_file", missing)
    clip_bpe.cache_clear()
    yield
    clip_bpe.cache_clear()


def test_the_real_vocabulary_merges_words_into_few_tokens() -> None:
    tokenizer = tiny_tokenizer()
    assert len(tokenizer) == VOCAB_SIZE
    assert len(text_token_ids(tokenizer, TEXT)) == len(TEXT.split())


@pytest.mark.usefixtures("without_clip_file")
def test_without_clips_file_tiny_tokenizes_by_byte_and_says_so() -> None:
    with structlog.testing.capture_logs() as logs:
        tokenizer = tiny_tokenizer()
    assert [entry["event"] for entry in logs] == ["clip_vocabulary_missing"]
    # The same ids where CLIP has them, so the model is built the same.
    assert len(tokenizer) == VOCAB_SIZE
    assert tokenizer.convert_tokens_to_ids([BOS, EOS]) == [VOCAB_SIZE - 2, VOCAB_SIZE - 1]
    ids = text_token_ids(tokenizer, TEXT)
    assert len(ids) == len(TEXT.replace(" ", ""))
    assert max(ids) < 512  # byte symbols only


@pytest.mark.usefixtures("without_clip_file")
def test_without_clips_file_tiny_still_loads_and_draws() -> None:
    generator = load_generator(PipelineConfig(model_path=BUILTIN_TINY, warmup=False))
    assert one(generator, spec(), noise_picture(1)).size == (128, 128)
