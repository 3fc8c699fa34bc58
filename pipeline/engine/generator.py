"""The SDXL + IP-Adapter generator: resident, one batch of pictures at a time.

The same class runs the real model and ``builtin:tiny``; only the
:class:`~pipeline.engine.weights.source.ModelSource` that builds the components differs.
"""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

import structlog
import torch
from PIL import Image

from pipeline.api.batch import image_seeds
from pipeline.api.config import PipelineConfig
from pipeline.api.errors import PipelineBrokenError, PipelineError, RequestTooLargeError
from pipeline.api.reference import reference_from_image
from pipeline.api.spec import GenerationSpec, JobKind, uses_negative_prompt
from pipeline.engine.reference.adapters import (
    adapter_for,
    attach_ip_adapter,
    encode_reference,
    fuse_lora,
)
from pipeline.engine.reference.ip_scale import IPAdapterScale
from pipeline.engine.runtime.compiling import WARM_UP_BATCHES
from pipeline.engine.runtime.device import choose_device, choose_dtype, free_memory
from pipeline.engine.runtime.placement import place, set_vae_tiling
from pipeline.engine.runtime.schedulers import configure_scheduler
from pipeline.engine.runtime.stopping import run_stoppable
from pipeline.engine.text.long_prompt import encode_prompts, text_token_ids
from pipeline.engine.text.prompts import compose_prompt
from pipeline.engine.untyped import SDXLPipeline
from pipeline.engine.weights.source import ModelSource

log = structlog.get_logger(__name__)

WARMUP_STEPS = 2
# Out of memory: the memory is freed and the same request drawn once more.
OOM_TRIES = 2
_WARMUP_IMAGE_SIZE = 64
# CUDA errors other than out-of-memory (illegal address, device-side assert)
# leave the CUDA context unusable; nothing but a new process recovers.
_DEVICE_ERRORS: tuple[type[BaseException], ...] = (
    (torch.AcceleratorError,) if hasattr(torch, "AcceleratorError") else ()
)


class SDXLGenerator:
    """Diffusers' ``StableDiffusionXLPipeline`` with an IP-Adapter, kept loaded.

    `generate` is serialised by a lock, so even a careless caller gets one
    generation at a time. Out of memory frees the memory and draws the same
    request once more; out of memory again means the request is too large for
    this GPU (:class:`RequestTooLargeError`, the generator stays usable),
    unless no larger batch than it was ever drawn here, when the GPU itself is
    failing. That, or a CUDA error, raises :class:`PipelineBrokenError` now and
    on every later call.
    A set stop event ends a generation at its next step with
    :class:`~pipeline.api.errors.GenerationStopped`; the generator stays usable.
    """

    def __init__(self, config: PipelineConfig, source: ModelSource) -> None:
        self._config = config
        self._source = source
        self._pipe: SDXLPipeline | None = None
        self._device = torch.device("cpu")
        self._dtype = torch.float32
        self._native_size = source.expected_native_size
        self._lock = threading.Lock()
        # The largest batch drawn so far (pictures x pixels x guidance copies).
        self._largest_drawn = 0
        self._tokenizers: list[Any] = []
        self._broken: str | None = None
        self._ip_scale: IPAdapterScale | None = None
        self._compiled = False
        self.load_seconds: float | None = None

    @property
    def model_name(self) -> str:
        """The configured model name, else the source's (a path or hub id)."""
        return self._config.model_name or self._source.name

    @property
    def native_size(self) -> tuple[int, int]:
        """The UNet's native picture size; read from the model once loaded."""
        return self._native_size

    @property
    def reference_side(self) -> int | None:
        """The image encoder's input size once loaded; ``None`` without an IP-Adapter."""
        if self._pipe is None or self._ip_scale is None:
            return None
        return int(self._pipe.image_encoder.config.image_size)

    @property
    def pipeline(self) -> SDXLPipeline:
        """The loaded diffusers pipeline (for benchmarks and tests)."""
        if self._pipe is None:
            raise PipelineError("the generator is not loaded; call load() first")
        return self._pipe

    def load(self) -> None:
        """Build or read the model, attach the adapters, place it, warm it up."""
        started = time.perf_counter()
        config = self._config
        self._device = choose_device(config.device)
        dtype = choose_dtype(self._device, config.dtype)
        self._dtype = dtype
        pipe = self._source.base_pipeline(dtype)
        if config.lora_path:
            fuse_lora(pipe, config.lora_path, config.lora_scale)
        if config.enable_ip_adapter:
            attach_ip_adapter(pipe, self._source.ip_adapter(dtype))
        else:
            log.info(
                "ip_adapter_disabled",
                message="ENABLE_IP_ADAPTER=false: plain text-to-image, input images are ignored",
            )
        configure_scheduler(pipe, config)
        # place() compiles on a GPU, and on a CPU only with a named backend.
        self._compiled = config.torch_compile and (
            self._device.type == "cuda" or config.torch_compile_backend is not None
        )
        place(
            pipe,
            self._device,
            dtype,
            compile_unet=config.torch_compile,
            compile_mode=config.torch_compile_mode,
            compile_backend=config.torch_compile_backend,
        )
        if config.enable_ip_adapter:
            # After placement, so the saved weights are on the device too.
            self._ip_scale = IPAdapterScale(pipe.unet)
        self._pipe = pipe
        # Private copies for prompt_tokens, which runs beside a generation.
        self._tokenizers = [copy.deepcopy(t) for t in (pipe.tokenizer, pipe.tokenizer_2)]
        side = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
        self._native_size = (side, side)
        if config.warmup:
            self._warm_up()
        self.load_seconds = time.perf_counter() - started
        log.info(
            "pipeline_ready",
            model=self.model_name,
            device=str(self._device),
            dtype=str(dtype).removeprefix("torch."),
            ip_adapter=config.enable_ip_adapter,
            lora=bool(config.lora_path),
            torch_compile=config.torch_compile,
            native_size=list(self._native_size),
            load_seconds=round(self.load_seconds, 3),
        )

    def _warm_up(self) -> None:
        # At the native size, so compiled graphs and cuDNN's algorithm choices
        # are ready for the jobs that follow. A compiled UNet has one graph per
        # batch class and per adapter kind, whatever the size and prompt
        # (pipeline.engine.runtime.compiling): each is compiled here, on this
        # thread, never in a job.
        width, height = self._native_size
        cases = [(JobKind.MEMORY, 5.0, 1)]
        if self._compiled:
            kinds = [JobKind.MEMORY]
            if self._ip_scale is not None and self._ip_scale.adapters > 1:
                kinds.append(JobKind.SUBJECT)
            cases = [
                (kind, guidance, pictures)
                for kind in kinds
                for guidance, pictures in WARM_UP_BATCHES
            ]
        started = time.perf_counter()
        for kind, guidance, pictures in cases:
            spec = GenerationSpec(
                kind=kind,
                prompt="warm-up",
                style_prompt="",
                negative_prompt="",
                num_inference_steps=WARMUP_STEPS,
                ip_adapter_scale=0.5,
                guidance_scale=guidance,
                seed=0,
                width=width,
                height=height,
                num_images=pictures,
            )
            self.generate(spec, Image.new("RGB", (_WARMUP_IMAGE_SIZE,) * 2, "gray"))
        log.info(
            "pipeline_warmed_up",
            seconds=round(time.perf_counter() - started, 3),
            generations=len(cases),
        )

    def generate(
        self,
        spec: GenerationSpec,
        image: Image.Image,
        stop: threading.Event | None = None,
    ) -> list[Image.Image]:
        """Draw ``spec.num_images`` RGB pictures of exactly ``spec.width`` x ``spec.height``.

        Picture i uses seed ``(spec.seed + i) % 2**32``. When `stop` is set,
        the run ends at its next denoising step with
        :class:`~pipeline.api.errors.GenerationStopped`.
        """
        with self._lock:
            out_of_memory = ""
            for _ in range(OOM_TRIES):
                if self._broken:
                    raise PipelineBrokenError(self._broken)
                out_of_memory = ""
                try:
                    pictures = self._draw(spec, image, stop)
                except torch.OutOfMemoryError as error:
                    # Only the message is kept: the error's traceback holds the
                    # frames of the forward pass and their activations, which are
                    # freed once this block has let go of it.
                    out_of_memory = str(error).splitlines()[0] if str(error) else "out of memory"
                except _DEVICE_ERRORS as error:
                    self._broken = f"the GPU failed and cannot be used again: {error}"
                    raise PipelineBrokenError(self._broken) from error
                finally:
                    self._restore_vae_dtype()
                if not out_of_memory:
                    self._largest_drawn = max(self._largest_drawn, _footprint(spec))
                    return pictures
                free_memory(self._device)
                log.warning("generation_oom", size=_size(spec), detail=out_of_memory)
            # Raised outside the handler, so it has no __context__ either.
            raise self._out_of_memory(spec, out_of_memory)

    def prompt_tokens(self, spec: GenerationSpec) -> int:
        """The text tokens of the longest prompt :meth:`generate` encodes for
        `spec` (the composed prompt, the negative with guidance), counted by
        private copies of the pipeline's tokenizers."""
        if not self._tokenizers:
            raise PipelineError("the generator is not loaded; call load() first")
        texts = [compose_prompt(spec)]
        if uses_negative_prompt(spec.guidance_scale):
            texts.append(spec.negative_prompt)
        return max(len(text_token_ids(t, text)) for t in self._tokenizers for text in texts)

    def _restore_vae_dtype(self) -> None:
        # With a float16 VAE whose config says force_upcast, diffusers casts
        # it to float32 for the decode and back afterwards; a failure in the
        # decode skips the cast back, and every later job would then fail on
        # mismatched dtypes. Cheap when nothing changed: one dtype read.
        vae = self._pipe.vae if self._pipe is not None else None
        if vae is not None and vae.dtype != self._dtype:
            log.warning("vae_dtype_restored", dtype=str(self._dtype).removeprefix("torch."))
            vae.to(dtype=self._dtype)

    def _out_of_memory(self, spec: GenerationSpec, detail: str) -> PipelineError:
        # Out of memory twice, with the memory freed in between: the request
        # is too large for this GPU, unless a batch at least as large was
        # drawn here before, which then says the GPU (or its memory) is failing.
        size = _size(spec)
        if _footprint(spec) <= self._largest_drawn:
            self._broken = f"out of GPU memory at {size}, which fitted before: the GPU is failing"
            log.error("generation_oom_fatal", size=size, detail=detail)
            return PipelineBrokenError(self._broken)
        log.warning("generation_too_large", size=size, detail=detail)
        return RequestTooLargeError(
            f"out of GPU memory at {size} even after freeing memory: the request does not "
            "fit this GPU; ask for fewer pictures (num_images) or a smaller width x height"
        )

    def _draw(
        self, spec: GenerationSpec, image: Image.Image, stop: threading.Event | None
    ) -> list[Image.Image]:
        pipe = self.pipeline
        arguments: dict[str, Any] = {
            "num_inference_steps": spec.num_inference_steps,
            "guidance_scale": spec.guidance_scale,
            "width": spec.width,
            "height": spec.height,
            "num_images_per_prompt": spec.num_images,
            # CPU generators give the same starting noise on every device
            # type, and keep per-job seeding independent of CUDA state; one
            # per picture, so picture i is the one-picture job of seed + i.
            "generator": [torch.Generator(device="cpu").manual_seed(s) for s in image_seeds(spec)],
            "output_type": "pil",
        }
        guidance = uses_negative_prompt(spec.guidance_scale)
        negative = spec.negative_prompt if guidance else None
        set_vae_tiling(pipe, spec.width * spec.height, self._config.vae_tiling_pixels)
        if self._ip_scale is not None:
            adapters = self._ip_scale.adapters
            self._ip_scale.set(spec.ip_adapter_scale, adapter_for(spec.kind, adapters))
            side = self.reference_side or image.width
            if image.size != (side, side):
                # Framed square before the encoder's centre crop, so it sees
                # the whole person; the consumer hands it over prepared.
                image = reference_from_image(image, side)
        with torch.inference_mode():
            if self._ip_scale is not None:
                # Encoded once per job, for the job kind's adapter alone.
                arguments["ip_adapter_image_embeds"] = encode_reference(pipe, image, guidance)
            # Embeddings, not strings: diffusers would cut the text at 77 tokens.
            arguments |= encode_prompts(pipe, compose_prompt(spec), negative).as_arguments()
            drawn = run_stoppable(pipe, arguments, stop)
        # The count and size are checked where every generator's pictures are
        # received (the consumer's generate stage), not once per generator.
        pictures = [picture.convert("RGB") for picture in drawn]
        return pictures


def _size(spec: GenerationSpec) -> str:
    return f"{spec.num_images}x{spec.width}x{spec.height}"


def _footprint(spec: GenerationSpec) -> int:
    """What a generation's activations grow with: the latents' pixels, doubled
    under classifier-free guidance (the UNet draws each picture twice)."""
    copies = 2 if uses_negative_prompt(spec.guidance_scale) else 1
    return copies * spec.num_images * spec.width * spec.height
