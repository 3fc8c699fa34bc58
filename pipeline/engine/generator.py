"""The SDXL + IP-Adapter generator: resident, one batch of pictures at a time.

The same class runs the real model and ``builtin:tiny``; only the
:class:`~pipeline.engine.weights.source.ModelSource` that builds the components differs.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import structlog
import torch
from PIL import Image

from pipeline.api.batch import image_seeds, largest_requests
from pipeline.api.config import BUILTIN_MODELS, PipelineConfig, compile_sizes
from pipeline.api.errors import PipelineBrokenError, PipelineError, RequestTooLargeError
from pipeline.api.reference import reference_from_image
from pipeline.api.safety import CheckedPictures, PictureChecker
from pipeline.api.spec import GenerationSpec, JobKind, uses_negative_prompt
from pipeline.engine.reference.adapters import (
    adapter_for,
    attach_ip_adapter,
    encode_reference,
    fuse_lora,
)
from pipeline.engine.reference.ip_scale import IPAdapterScale
from pipeline.engine.runtime.compiling import (
    GRAPHS,
    WARM_UP_BATCHES,
    Compiled,
    cache_figures,
    raise_recompile_limit,
)
from pipeline.engine.runtime.decoding import Decoded, Decoder
from pipeline.engine.runtime.device import choose_device, choose_dtype, free_memory
from pipeline.engine.runtime.fitting import memory_probe, prove_fit
from pipeline.engine.runtime.placement import place
from pipeline.engine.runtime.schedulers import configure_scheduler
from pipeline.engine.runtime.stopping import run_stoppable, step_events
from pipeline.engine.runtime.sync_free import HostSchedule, starting_noise, step_generators
from pipeline.engine.runtime.warmup import (
    WARMUP_STEPS,
    footprint,
    gray_reference,
    size_text,
    warm_up_spec,
)
from pipeline.engine.text.long_prompt import encode_prompts, text_token_ids
from pipeline.engine.text.prompts import compose_prompt
from pipeline.engine.untyped import SDXLPipeline
from pipeline.engine.weights.lora_slot import LoraSlot, open_slot
from pipeline.engine.weights.source import ModelSource

log = structlog.get_logger(__name__)
T = TypeVar("T")

# Out of memory: the memory is freed and the same request drawn once more.
OOM_TRIES = 2
# CUDA errors other than out-of-memory (illegal address, device-side assert)
# leave the CUDA context unusable; nothing but a new process recovers.
_DEVICE_ERRORS: tuple[type[BaseException], ...] = (
    (torch.AcceleratorError,) if hasattr(torch, "AcceleratorError") else ()
)


class SDXLGenerator:
    """Diffusers' ``StableDiffusionXLPipeline`` with an IP-Adapter, kept loaded.

    The pipeline denoises; the decode is :mod:`pipeline.engine.runtime.decoding`'s.
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
        # Chosen now, so a machine that cannot serve a real model says so
        # before anything is loaded (the safety checker included).
        needs_gpu = config.model_path not in BUILTIN_MODELS
        self._device = choose_device(config.device, needs_gpu=needs_gpu)
        self._dtype = torch.float32
        self._native_size = source.expected_native_size
        self._lock = threading.Lock()
        # The largest batch drawn so far (pictures x pixels x guidance copies).
        self._largest_drawn = 0
        self._tokenizers: list[Any] = []
        self._broken: str | None = None
        self._ip_scale: IPAdapterScale | None = None
        self._compiled: Compiled | None = None
        self._schedule: HostSchedule | None = None
        self._decoder: Decoder | None = None
        self.style_slot: LoraSlot | None = None
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
    def graphs_built(self) -> int:
        """Graphs compiled or recorded in this process (see ``compiling``)."""
        return GRAPHS.total

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
        # The styles' LoRA slot: made before placement and compilation.
        self.style_slot = open_slot(pipe, config)
        configure_scheduler(pipe, config)
        # place() compiles on a GPU, and on a CPU only with a named backend.
        self._compiled = place(
            pipe,
            self._device,
            dtype,
            compile_unet=config.torch_compile,
            compile_mode=config.torch_compile_mode,
            compile_backend=config.torch_compile_backend,
            compile_vae=config.torch_compile_vae,
            compile_regional=config.torch_compile_regional,
        )
        if self.style_slot is not None:
            self.style_slot.settle(config.style_loras)
        if config.enable_ip_adapter:
            # After placement, so the saved weights are on the device too.
            self._ip_scale = IPAdapterScale(pipe.unet)
        self._schedule = HostSchedule(pipe.unet)
        self._decoder = Decoder(pipe, config.tiling_threshold)
        self._pipe = pipe
        # Private copies for prompt_tokens, which runs beside a generation.
        self._tokenizers = [copy.deepcopy(t) for t in (pipe.tokenizer, pipe.tokenizer_2)]
        side = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
        self._native_size = (side, side)
        if config.warmup:
            self._warm_up()
            if self._compiled is not None:
                self._compiled.freeze()
        self._prove_fit()
        self.load_seconds = time.perf_counter() - started
        log.info(
            "pipeline_ready",
            model=self.model_name,
            device=str(self._device),
            dtype=str(dtype).removeprefix("torch."),
            ip_adapter=config.enable_ip_adapter,
            lora=bool(config.lora_path),
            torch_compile=config.torch_compile,
            graphs=self.graphs_built,
            compile_cache=cache_figures() if self._compiled else None,
            native_size=list(self._native_size),
            load_seconds=round(self.load_seconds, 3),
        )

    def _warm_up(self) -> None:
        # At each compiled size (else the native one), so compiled graphs and
        # cuDNN's algorithm choices are ready for the jobs that follow. A
        # compiled UNet has one graph per compiled size, batch class and
        # adapter kind (pipeline.engine.runtime.compiling): each is compiled
        # here, on this thread, never in a job.
        cases = [(JobKind.MEMORY, 5.0, 1, self._native_size)]
        if self._compiled is not None:
            kinds = [JobKind.MEMORY]
            if self._ip_scale is not None and self._ip_scale.adapters > 1:
                kinds.append(JobKind.SUBJECT)
            sizes = compile_sizes(self._config.torch_compile_sizes) or (self._native_size,)
            cases = [
                (kind, guidance, pictures, size)
                for size in sizes
                for kind in kinds
                for guidance, pictures in WARM_UP_BATCHES
            ]
            raise_recompile_limit(len(cases))
        started = time.perf_counter()
        gray = gray_reference()
        for kind, guidance, pictures, (width, height) in cases:
            spec = warm_up_spec(kind, guidance, pictures, width, height, WARMUP_STEPS)
            self.generate(spec, gray)
        log.info(
            "pipeline_warmed_up",
            seconds=round(time.perf_counter() - started, 3),
            generations=len(cases),
            graphs=self.graphs_built,
        )

    def _prove_fit(self) -> None:
        """On a GPU, one step of each of the largest requests the settings allow."""
        probe = memory_probe(self._device)
        if probe is None:
            return
        gray = gray_reference()

        def one_step(pictures: int, width: int, height: int) -> None:
            spec = warm_up_spec(JobKind.MEMORY, 5.0, pictures, width, height, 1)
            self._draw(spec, gray, None).pictures()

        # What the proof leaves cached (the allocator's blocks, CUDA graphs of
        # the largest batch) is what such a job would reuse: kept.
        cases = largest_requests(self._native_size, self._config.max_batch_pixels)
        prove_fit(probe, cases, one_step)

    def generate(
        self,
        spec: GenerationSpec,
        image: Image.Image,
        stop: threading.Event | None = None,
    ) -> list[Image.Image]:
        """Draw ``spec.num_images`` RGB pictures of exactly ``spec.width`` x ``spec.height``.

        Picture i uses seed ``(spec.seed + i) % 2**32``. When `stop` is set,
        the run ends within two denoising steps with
        :class:`~pipeline.api.errors.GenerationStopped`.
        """
        return self._guarded(lambda: self._draw(spec, image, stop).pictures(), spec)

    def generate_checked(
        self,
        spec: GenerationSpec,
        image: Image.Image,
        stop: threading.Event | None,
        checker: PictureChecker,
    ) -> CheckedPictures:
        """:meth:`generate`'s pictures and `checker`'s flags, read where they were decoded.

        A checker that reads device tensors (``check_pixels``) gets the
        decoded 8-bit pictures on the device; any other gets the pictures.
        """

        def draw_and_check() -> CheckedPictures:
            decoded = self._draw(spec, image, stop)
            check_pixels = getattr(checker, "check_pixels", None)
            started = time.perf_counter()
            flags = check_pixels(decoded.pixels) if check_pixels else None
            seconds = time.perf_counter() - started
            pictures = decoded.pictures()
            if flags is None:
                started = time.perf_counter()
                flags = checker.check(pictures)
                seconds = time.perf_counter() - started
            return CheckedPictures(pictures, list(flags), seconds)

        return self._guarded(draw_and_check, spec)

    def _guarded(self, draw: Callable[[], T], spec: GenerationSpec) -> T:
        with self._lock:
            out_of_memory = ""
            for _ in range(OOM_TRIES):
                if self._broken:
                    raise PipelineBrokenError(self._broken)
                out_of_memory = ""
                try:
                    drawn = draw()
                except torch.OutOfMemoryError as error:
                    # Only the message is kept: the error's traceback holds the
                    # frames of the forward pass and their activations, which are
                    # freed once this block has let go of it.
                    out_of_memory = str(error).splitlines()[0] if str(error) else "out of memory"
                except _DEVICE_ERRORS as error:
                    self._broken = f"the GPU failed and cannot be used again: {error}"
                    raise PipelineBrokenError(self._broken) from error
                if not out_of_memory:
                    self._largest_drawn = max(self._largest_drawn, footprint(spec))
                    return drawn
                free_memory(self._device)
                log.warning("generation_oom", size=size_text(spec), detail=out_of_memory)
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

    def _out_of_memory(self, spec: GenerationSpec, detail: str) -> PipelineError:
        # Out of memory twice, with the memory freed in between: the request
        # is too large for this GPU, unless a batch at least as large was
        # drawn here before, which then says the GPU (or its memory) is failing.
        size = size_text(spec)
        if footprint(spec) <= self._largest_drawn:
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
    ) -> Decoded:
        pipe = self.pipeline
        seeds = image_seeds(spec)
        scale = int(pipe.vae_scale_factor)
        shape = (int(pipe.unet.config.in_channels), spec.height // scale, spec.width // scale)
        # One CPU generator per picture draws its starting noise, the same on
        # every device type and independent of CUDA state, so picture i starts
        # as the one-picture job of seed + i; its step noise is drawn on the
        # device (pipeline.engine.runtime.sync_free).
        latents, host_generators = starting_noise(seeds, shape, self._dtype)
        arguments: dict[str, Any] = {
            "num_inference_steps": spec.num_inference_steps,
            "guidance_scale": spec.guidance_scale,
            "width": spec.width,
            "height": spec.height,
            "num_images_per_prompt": spec.num_images,
            "latents": latents,
            "generator": step_generators(seeds, self._device, host_generators),
            "output_type": "latent",
        }
        guidance = uses_negative_prompt(spec.guidance_scale)
        negative = spec.negative_prompt if guidance else None
        if self.style_slot is not None:
            self.style_slot.apply(spec)
        if self._ip_scale is not None:
            adapters = self._ip_scale.adapters
            self._ip_scale.set(spec.ip_adapter_scale, adapter_for(spec.kind, adapters))
            side = self.reference_side or image.width
            if image.size != (side, side):
                # Framed square before the encoder's centre crop, so it sees
                # the whole person; the consumer hands it over prepared.
                image = reference_from_image(image, side)
        if self._schedule is None or self._decoder is None:
            raise PipelineError("the generator is not loaded; call load() first")
        with torch.inference_mode(), self._schedule.job(pipe, self._device):
            if self._ip_scale is not None:
                # Encoded once per job, for the job kind's adapter alone.
                arguments["ip_adapter_image_embeds"] = encode_reference(pipe, image, guidance)
            # Embeddings, not strings: diffusers would cut the text at 77 tokens.
            arguments |= encode_prompts(pipe, compose_prompt(spec), negative).as_arguments()
            latents = run_stoppable(pipe, arguments, stop, step_events(self._device))
        # The count and size are checked where every generator's pictures are
        # received (the consumer's generate stage), not once per generator.
        return self._decoder.decode(latents)
