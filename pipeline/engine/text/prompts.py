"""The text prompt of each kind of job (contract section 1)."""

from __future__ import annotations

from pipeline.api.spec import GenerationSpec, JobKind

SUBJECT_LEAD = "portrait of the person"


def compose_prompt(spec: GenerationSpec) -> str:
    """The one prompt the model sees for `spec`.

    A memory job draws its prompt in the style of the style prompt; a subject
    job draws a portrait in that style, with the prompt added when given. The
    person's likeness comes from the input image through the IP-Adapter.

    The style comes before the story: the whole text is encoded window by
    window (:mod:`pipeline.engine.text.long_prompt`), but SDXL's pooled text embedding,
    which conditions the whole picture, is taken from the first 75 tokens
    only, and CLIP weighs early tokens most. A long story put first would
    leave the style to the later windows, where it carries little weight.
    """
    if spec.kind is JobKind.MEMORY:
        parts = [spec.style_prompt, spec.prompt]
    else:
        parts = [SUBJECT_LEAD, spec.style_prompt, spec.prompt]
    return ", ".join(part.strip() for part in parts if part.strip())
