"""Whole prompts for SDXL's two text encoders, however long.

CLIP's text encoders read 77 positions: a start token, 75 text tokens and an
end token. Diffusers cuts every prompt there, so the end of a long life story
(and whatever follows it) never reaches the model. Here the text's tokens are
split into 75-token windows, each wrapped in start and end tokens and padded
to 77, and every window is encoded; the windows' hidden states are joined
along the sequence axis, which the UNet's cross-attention takes at any length.

For a text of at most 75 tokens this is exactly diffusers' ``encode_prompt``:
one window, the penultimate hidden states of each encoder joined along the
feature axis, and the pooled (projected) embedding of the second encoder.
The pooled embedding is taken from the first window, which is why the
composed prompt puts what must carry the most weight first (see
:mod:`pipeline.engine.text.prompts`). The negative prompt is padded with windows of
empty text to the prompt's length (or the prompt to the negative's), since
classifier-free guidance batches the two together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pipeline.engine.untyped import SDXLPipeline

WINDOW_TEXT_TOKENS = 75
"""Text tokens in one window; the start and end tokens make it 77."""


@dataclass(frozen=True, slots=True)
class PromptEmbeddings:
    """The four embeddings diffusers' SDXL pipeline takes instead of strings.

    The negative pair is ``None`` when there is no classifier-free guidance.
    """

    prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor | None = None
    negative_pooled_prompt_embeds: torch.Tensor | None = None

    def as_arguments(self) -> dict[str, torch.Tensor]:
        """The pipeline call's keyword arguments, without the missing negative."""
        arguments = {
            "prompt_embeds": self.prompt_embeds,
            "pooled_prompt_embeds": self.pooled_prompt_embeds,
        }
        if (
            self.negative_prompt_embeds is not None
            and self.negative_pooled_prompt_embeds is not None
        ):
            arguments["negative_prompt_embeds"] = self.negative_prompt_embeds
            arguments["negative_pooled_prompt_embeds"] = self.negative_pooled_prompt_embeds
        return arguments


def text_token_ids(tokenizer: Any, text: str) -> list[int]:
    """The token ids of `text`, without start and end tokens, never truncated."""
    # verbose=False: the length warning is not wanted, the length is handled here.
    ids: list[int] = tokenizer(text, add_special_tokens=False, verbose=False).input_ids
    return ids


def token_windows(tokenizer: Any, text: str) -> list[list[int]]:
    """`text` as 77-token windows: start, up to 75 text tokens, end, padding.

    An empty text is one window, as diffusers encodes it.
    """
    ids = text_token_ids(tokenizer, text)
    chunks = [
        ids[start : start + WINDOW_TEXT_TOKENS] for start in range(0, len(ids), WINDOW_TEXT_TOKENS)
    ]
    return [_window(tokenizer, chunk) for chunk in chunks or [[]]]


def _window(tokenizer: Any, chunk: list[int]) -> list[int]:
    window = [tokenizer.bos_token_id, *chunk, tokenizer.eos_token_id]
    # Each tokenizer pads with its own token: SDXL's second pads with "!".
    return window + [tokenizer.pad_token_id] * (WINDOW_TEXT_TOKENS + 2 - len(window))


def encode_prompts(
    pipe: SDXLPipeline, prompt: str, negative_prompt: str | None
) -> PromptEmbeddings:
    """Encode `prompt` (and `negative_prompt`, unless ``None``) whole for `pipe`.

    Pass ``None`` as the negative when guidance is off (see
    :func:`pipeline.api.spec.uses_negative_prompt`): it is then neither encoded nor used.
    """
    texts = [prompt] if negative_prompt is None else [prompt, negative_prompt]
    pairs = [(pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)]
    windows = [[token_windows(tokenizer, text) for text in texts] for tokenizer, _ in pairs]
    count = max(len(per_text) for per_encoder in windows for per_text in per_encoder)
    hidden: list[torch.Tensor] = []
    pooled = torch.empty(0)
    for (tokenizer, encoder), per_text in zip(pairs, windows, strict=True):
        empty = _window(tokenizer, [])
        padded = [text_windows + [empty] * (count - len(text_windows)) for text_windows in per_text]
        ids = torch.tensor([window for text_windows in padded for window in text_windows])
        # All windows of both texts in one call.
        with torch.no_grad():
            output = encoder(ids.to(encoder.device), output_hidden_states=True)
        states = output.hidden_states[-2]
        hidden.append(states.reshape(len(texts), count * states.shape[1], states.shape[2]))
        # The second encoder's projected embedding of each text's first window.
        pooled = output[0][::count]
    device, dtype = pipe._execution_device, pipe.text_encoder_2.dtype
    embeds = torch.cat(hidden, dim=-1).to(dtype=dtype, device=device)
    pooled = pooled.to(dtype=dtype, device=device)
    if negative_prompt is None:
        return PromptEmbeddings(embeds, pooled)
    return PromptEmbeddings(embeds[:1], pooled[:1], embeds[1:], pooled[1:])
