"""Failures raised by the pipeline, free of any AWS or queue knowledge.

The consumer's classifier maps them: :class:`InvalidImageError` is permanent
(`invalid_input`), :class:`RequestTooLargeError` permanent (`too_large`),
:class:`GenerationOOMError` transient (`generation_failed`),
:class:`PipelineBrokenError` fatal. :class:`StartRefusedError` is
configuration this machine cannot serve (the worker refuses to start).
:class:`GenerationStopped` follows a stop the caller asked for (a timeout,
the end of a drain); the caller knows why and decides.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Root of the pipeline's failures; unclassified ones are transient."""


class InvalidImageError(PipelineError):
    """The input image is too large, has too many pixels, or cannot be decoded."""


class GenerationOOMError(PipelineError):
    """The GPU ran out of memory, and the request may fit another time.

    The SDXL generator draws a request once more itself after freeing memory
    and then raises :class:`RequestTooLargeError`; this is for generators that
    leave the second try to a later attempt.
    """


class RequestTooLargeError(PipelineError):
    """The request does not fit this GPU's memory even after memory was freed.

    Permanent for the request (fewer pictures or a smaller size would fit);
    the generator stays loaded and usable for other requests.
    """


class PipelineBrokenError(PipelineError):
    """The generator can no longer work (a CUDA error, out of memory on a batch
    that fitted before, wedged)."""


class ModelLoadError(PipelineError):
    """The model or one of its parts could not be found or loaded."""


class StartRefusedError(ModelLoadError):
    """This machine cannot serve with these settings; the message says why and what to change.

    A real model with no GPU visible, or a largest allowed request that does
    not fit the GPU's memory: bad configuration for this machine, found at
    start, never a failure of a request.
    """


class GenerationStopped(PipelineError):
    """The caller's stop event was set: generation ended at a step boundary.

    No picture was decoded; the generator stays loaded and usable.
    """


class ContentFilteredError(PipelineError):
    """A picture was still flagged by the safety checker after its last redraw.

    Permanent for the request: the same request draws the same pictures
    again. No picture of the job is handed on. The counts say what the
    checker saw, for metrics.
    """

    def __init__(self, message: str, *, checked: int, flagged: int, redraws: int) -> None:
        super().__init__(message)
        self.checked = checked
        self.flagged = flagged
        self.redraws = redraws
        self.check_seconds = 0.0


class StyleError(PipelineError):
    """A style's LoRA cannot go into the UNet's LoRA slot (the message names the style).

    Found at load, the worker refuses to start; found in a job (a file
    changed under a reloaded catalog), the job fails and may be retried.
    """
