"""A second IP-Adapter for subject jobs, chosen per job."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from pipeline.api.config import (
    BUILTIN_TINY,
    IP_ADAPTER_SUBFOLDER,
    IP_ADAPTER_WEIGHT_NAME,
    PipelineConfig,
)
from pipeline.api.errors import ModelLoadError
from pipeline.api.spec import JobKind
from pipeline.builtin.tiny import build_tiny
from pipeline.builtin.tiny import random_ip_adapter_weights as random_weights
from pipeline.engine.generator import SDXLGenerator
from tests.support.assets import close, load_generator, load_saved, noise_picture, one, pixels
from tests.support.specs import spec

AVATAR = noise_picture(1)
SUBJECT_WEIGHTS = "ip-adapter-subject.safetensors"


@pytest.fixture(scope="module")
def two_adapters(tiny_on_disk: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny IP-Adapter folder with a second, different adapter beside the first."""
    folder = tmp_path_factory.mktemp("adapters") / "ip_adapter"
    shutil.copytree(tiny_on_disk[1], folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        weights = random_weights(build_tiny().pipe.unet)
    flat = {
        f"{group}.{k}": v.contiguous() for group, part in weights.items() for k, v in part.items()
    }
    save_file(flat, str(folder / IP_ADAPTER_SUBFOLDER / SUBJECT_WEIGHTS))
    return folder


def _generator(model_dir: Path, ip_dir: Path, name: str, subject: str | None) -> SDXLGenerator:
    return load_saved(
        model_dir, ip_dir, ip_adapter_weight_name=name, subject_ip_adapter_weight_name=subject
    )


@pytest.mark.parametrize("scale", [0.8, 0.3])
def test_each_kind_draws_with_its_own_adapter_only(
    tiny_on_disk: tuple[Path, Path], two_adapters: Path, scale: float
) -> None:
    model_dir = tiny_on_disk[0]
    both = _generator(model_dir, two_adapters, IP_ADAPTER_WEIGHT_NAME, SUBJECT_WEIGHTS)
    assert both.pipeline.unet.encoder_hid_proj.image_projection_layers.__len__() == 2
    memory_only = _generator(model_dir, two_adapters, IP_ADAPTER_WEIGHT_NAME, None)
    subject_only = _generator(model_dir, two_adapters, SUBJECT_WEIGHTS, None)
    memory, subject = (
        spec(ip_adapter_scale=scale),
        spec(kind=JobKind.SUBJECT, ip_adapter_scale=scale),
    )
    # Alternating kinds: each picture is exactly the one its adapter alone draws.
    for _ in range(2):
        drawn = pixels(one(both, subject, AVATAR))
        assert close(drawn, pixels(one(subject_only, subject, AVATAR)))
        assert not close(drawn, pixels(one(memory_only, subject, AVATAR)))
        drawn = pixels(one(both, memory, AVATAR))
        assert close(drawn, pixels(one(memory_only, memory, AVATAR)))


def test_builtin_tiny_has_no_subject_adapter() -> None:
    with pytest.raises(ModelLoadError, match="one IP-Adapter"):
        load_generator(
            PipelineConfig(
                model_path=BUILTIN_TINY, subject_ip_adapter_weight_name="x", warmup=False
            )
        )


def test_a_job_runs_its_own_adapter_only_and_encodes_the_picture_once(
    tiny_on_disk: tuple[Path, Path], two_adapters: Path
) -> None:
    both = _generator(tiny_on_disk[0], two_adapters, IP_ADAPTER_WEIGHT_NAME, SUBJECT_WEIGHTS)
    unet = both.pipeline.unet
    processor = next(p for p in unet.attn_processors.values() if hasattr(p, "to_k_ip"))
    calls = {"adapter 0": 0, "adapter 1": 0, "image encoder": 0}

    def counting(name: str) -> Any:
        def hook(*_: Any) -> None:
            calls[name] += 1

        return hook

    hooks = [
        processor.to_k_ip[0].register_forward_pre_hook(counting("adapter 0")),
        processor.to_k_ip[1].register_forward_pre_hook(counting("adapter 1")),
        both.pipeline.image_encoder.register_forward_pre_hook(counting("image encoder")),
    ]
    try:
        steps = 2
        for kind, active, idle in ((JobKind.SUBJECT, "adapter 1", "adapter 0"),) * 2 + (
            (JobKind.MEMORY, "adapter 0", "adapter 1"),
        ):
            calls.update(dict.fromkeys(calls, 0))
            one(both, spec(kind=kind, num_inference_steps=steps), AVATAR)
            assert calls[active] == steps
            assert calls[idle] == 0
            assert calls["image encoder"] == 1
    finally:
        for hook in hooks:
            hook.remove()


def test_the_saved_adapter_weights_live_where_the_weights_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pipeline.engine.generator

    real_place = pipeline.engine.generator.place

    def place_elsewhere(pipe: Any, *args: Any, **kwargs: Any) -> None:
        # On a CPU, float64 stands in for the GPU: somewhere the weights move
        # to only when the pipeline is placed.
        real_place(pipe, *args, **kwargs)
        pipe.unet.to(dtype=torch.float64)

    monkeypatch.setattr(pipeline.engine.generator, "place", place_elsewhere)
    generator = load_generator(PipelineConfig(model_path=BUILTIN_TINY, warmup=False))
    scale = generator._ip_scale
    assert scale is not None
    assert scale.saved_placement() == {(torch.device("cpu"), torch.float64)}
