"""Compiling the UNet (and optionally the VAE decoder) once, at start, and knowing it.

Requests vary the batch (1-4 pictures, doubled by classifier-free guidance),
the width and height (multiples of 64 up to 2048), and the prompt's length
(one 77-token window per 75 tokens of text). A compilation takes a minute or
more for SDXL, past a job's deadline, so none may happen in a job:

- **Sizes are static**, compiled for the sizes named in
  ``torch_compile_sizes`` (the native size unless told otherwise), each
  warmed up at start. A static size keeps inductor's convolution layout
  optimisation (off with dynamic shapes) and lets ``max-autotune`` tune for
  the size it serves, not for whichever came first.
- **The batch and the prompt's length are dynamic** (``mark_dynamic`` on
  each call): one graph per size serves every batch of two or more and every
  number of prompt windows. Neither dimension reaches a convolution's layout
  or an autotuning choice. torch specialises a batch of one, so one picture
  without guidance has a graph of its own: :data:`WARM_UP_BATCHES`.
- **After the warm-up nothing compiles**: the compiled calls run under
  ``torch.compiler.set_stance("eager_on_recompile")``, so a size nobody named,
  or a guard inductor added that the warm-up did not meet, runs uncompiled for
  that call instead of compiling in the middle of a job.
- **Graphs are counted** (:class:`GraphCount`): compilations and, in the
  modes that replay CUDA graphs (``reduce-overhead``, ``max-autotune``),
  graph recordings. A job that builds any shows it in its figures.
- In the CUDA-graph modes each call starts a new graph step
  (``cudagraph_mark_step_begin``) and its output is copied out of the
  graph's pool before the next replay overwrites it.
- **Regional compilation** (``torch_compile_regional``) compiles only the
  UNet's repeated transformer blocks (diffusers' ``compile_repeated_blocks``),
  once for all 70 of them: a start several times quicker. They hold no
  convolution, so they are compiled with dynamic shapes.
- Compiled code is cached by inductor (``TORCHINDUCTOR_CACHE_DIR``, on the
  cache volume), so a restart reads its graphs instead of compiling them;
  :func:`cache_figures` says how many were read and how many compiled.
- On a CPU, where the UNet is compiled only for tests and benchmarks of
  compilation, oneDNN is off while a compiled module runs: it takes a
  one-picture convolution only past 20480 input values, a threshold a GPU
  does not have, and each such threshold would be a guard of its own.
- The timestep is handed to the UNet as float32 whatever the scheduler makes
  of it (:mod:`pipeline.engine.runtime.sync_free` already does): a new dtype
  would be a new graph, and the UNet turns it into float32 sinusoids at once.
- Several IP-Adapters: the active one is a constant of the graph
  (:mod:`pipeline.engine.reference.ip_scale`), so the warm-up draws each kind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog
import torch
from torch._dynamo.callback import CallbackArgs, CallbackTrigger, callback_handler

from pipeline.engine.untyped import SDXLPipeline

log = structlog.get_logger(__name__)

DEFAULT_BACKEND = "inductor"
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
WARM_UP_BATCHES = ((1.0, 1), (5.0, 1))
"""(guidance scale, pictures) the warm-up draws at each compiled size: one
picture without guidance (the UNet sees a batch of 1) and with it (it sees
2: the graph that then serves every larger batch and prompt length)."""
STANCE_AFTER_WARM_UP = "eager_on_recompile"
_TEXT_LENGTH_DIM = 1


@dataclass(frozen=True)
class CompileOptions:
    """What to compile, and how (see the module's notes)."""

    mode: str | None = None
    backend: str | None = None
    vae: bool = False
    regional: bool = False

    @property
    def cuda_graphs(self) -> bool:
        """Whether the mode replays CUDA graphs."""
        return (self.backend or DEFAULT_BACKEND) == DEFAULT_BACKEND and (
            self.mode in CUDA_GRAPH_MODES
        )


class GraphCount:
    """Graphs compiled, and CUDA graphs recorded, in this process so far.

    Told by torch's compile callbacks, which :func:`torch._dynamo.reset`
    clears: the count is kept here and the callback put back when missing.
    """

    def __init__(self) -> None:
        self.compiled = 0
        self.recorded = 0

    def _started(self, args: CallbackArgs) -> None:
        if args.callback_trigger is CallbackTrigger.DYNAMO:
            self.compiled += 1
        elif args.callback_trigger is CallbackTrigger.CUDAGRAPH_RECORDING:
            self.recorded += 1

    def listen(self) -> None:
        """Be told of every compilation and recording from now on."""
        if self._started not in callback_handler.start_callbacks:
            callback_handler.register_start_callback(self._started)

    @property
    def total(self) -> int:
        """Compilations plus recordings."""
        self.listen()
        return self.compiled + self.recorded


GRAPHS = GraphCount()


@dataclass
class Compiled:
    """The compiled parts of a pipeline; frozen once warmed up."""

    options: CompileOptions
    frozen: bool = False
    parts: list[str] = field(default_factory=list)

    def freeze(self) -> None:
        """From now on a compiled call that would compile runs uncompiled instead."""
        self.frozen = True


def compile_pipeline(pipe: SDXLPipeline, options: CompileOptions) -> Compiled:
    """Compile `pipe`'s UNet (whole, or its repeated blocks) and optionally its VAE decoder.

    The modules stay the same objects (their ``forward`` is replaced), so the
    pipeline, its hooks and its configuration see the same modules.
    """
    GRAPHS.listen()
    compiled = Compiled(options)
    backend = options.backend or DEFAULT_BACKEND
    unet = pipe.unet
    if options.regional:
        unet.compile_repeated_blocks(**_torch_options(options, dynamic=True))
        unet.forward = _guarded(compiled, unet.forward, mark=False)
        compiled.parts.append("unet.transformer_blocks")
    else:
        forward = torch.compile(unet.forward, **_torch_options(options, dynamic=False))
        unet.forward = _guarded(compiled, forward, mark=True)
        compiled.parts.append("unet")
    if options.vae:
        decoder = pipe.vae.decoder
        forward = torch.compile(decoder.forward, **_torch_options(options, dynamic=False))
        decoder.forward = _guarded(compiled, forward, mark=False)
        compiled.parts.append("vae.decoder")
    log.info(
        "torch_compile_enabled",
        modules=compiled.parts,
        mode=options.mode,
        backend=backend,
        dynamic=["batch", "prompt length"] if not options.regional else "all",
        cuda_graphs=options.cuda_graphs,
    )
    return compiled


def _torch_options(options: CompileOptions, *, dynamic: bool) -> dict[str, Any]:
    backend = options.backend or DEFAULT_BACKEND
    chosen: dict[str, Any] = {"backend": backend, "dynamic": dynamic}
    if backend == DEFAULT_BACKEND:
        chosen["mode"] = options.mode
    return chosen


def raise_recompile_limit(graphs: int) -> None:
    """Let torch keep `graphs` graphs per compiled function (and some room)
    before it would give up and run it uncompiled for good."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, graphs + 8)


def _guarded(compiled: Compiled, forward: Callable[..., Any], *, mark: bool) -> Callable[..., Any]:
    def call(sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if mark:
            args = (_float32_timestep(args[0], sample.device), *args[1:]) if args else args
            _mark_dynamic(sample, args, kwargs)
        with _stance(compiled.frozen), _without_onednn(sample.device):
            if compiled.options.cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()  # type: ignore[no-untyped-call]
                return _copied(forward(sample, *args, **kwargs))
            return forward(sample, *args, **kwargs)

    return call


def _float32_timestep(timestep: Any, device: torch.device) -> torch.Tensor:
    if isinstance(timestep, torch.Tensor):
        return timestep if timestep.dtype == torch.float32 else timestep.to(torch.float32)
    # A Python number would be a constant of the graph: one graph per step.
    return torch.tensor(float(timestep), device=device)


def _mark_dynamic(sample: torch.Tensor, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Every batched input's batch dynamic (from 2: torch specialises 1), and the text's length."""
    batch = sample.shape[0]
    if batch > 1:
        for tensor in _tensors((sample, args, kwargs)):
            if tensor.dim() and tensor.shape[0] == batch:
                torch._dynamo.mark_dynamic(tensor, 0)
    text = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
    if isinstance(text, torch.Tensor) and text.dim() == 3:
        torch._dynamo.mark_dynamic(text, _TEXT_LENGTH_DIM)


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensors(item)


def _copied(output: Any) -> Any:
    # A CUDA graph's outputs live in its pool until the next replay.
    if isinstance(output, torch.Tensor):
        return output.clone()
    if isinstance(output, tuple):
        return tuple(_copied(item) for item in output)
    return output


@contextmanager
def _stance(frozen: bool) -> Iterator[None]:
    if not frozen:
        yield
        return
    with torch.compiler.set_stance(STANCE_AFTER_WARM_UP):
        yield


@contextmanager
def _without_onednn(device: torch.device) -> Iterator[None]:
    if device.type != "cpu":
        yield
        return
    # Only the one flag: torch.backends.mkldnn.flags() would also reset
    # oneDNN's determinism and TF32 settings to its own defaults.
    enabled = torch._C._get_mkldnn_enabled()
    torch._C._set_mkldnn_enabled(False)
    try:
        yield
    finally:
        torch._C._set_mkldnn_enabled(enabled)


def cache_figures() -> dict[str, int]:
    """Inductor's cache this process: graphs read from it and graphs compiled anew."""
    from torch._dynamo.utils import counters

    inductor = counters["inductor"]
    return {
        "hits": int(inductor["fxgraph_cache_hit"]),
        "misses": int(inductor["fxgraph_cache_miss"]),
    }
