"""The UNet's LoRA slot on builtin:tiny: styles swapped per job, exactly, in place.

The reference for a style at a scale is diffusers' own: the same LoRA file
fused into a fresh model at that scale (``LORA_PATH``, ``LORA_SCALE``).
"""

from __future__ import annotations

import dataclasses
import gc
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from pipeline.api.config import BUILTIN_TINY, PipelineConfig
from pipeline.api.errors import StyleError
from pipeline.api.lora_files import file_digest, inspect_lora, slot_for
from pipeline.api.spec import GenerationSpec
from pipeline.engine.generator import SDXLGenerator
from tests.support.assets import alike, load_generator, make_tiny_lora, noise_picture, one, pixels
from tests.support.specs import spec

STEPS = 1
SIDE = 64


@dataclasses.dataclass(frozen=True)
class Lora:
    name: str
    path: Path
    digest: str

    def job(self, scale: float = 1.0, **fields: Any) -> GenerationSpec:
        return spec(
            num_inference_steps=STEPS,
            width=SIDE,
            height=SIDE,
            style=self.name,
            style_strength=1.0,
            style_digest=self.digest,
            style_lora=str(self.path),
            style_lora_scale=scale,
            **fields,
        )


def _lora(folder: Path, name: str, **options: Any) -> Lora:
    path = make_tiny_lora(folder / f"{name}.safetensors", **options)
    return Lora(name, path, file_digest(path))


@pytest.fixture(scope="module")
def loras(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Lora]:
    folder = tmp_path_factory.mktemp("styles")
    return {
        # Every attention projection at rank 4, alpha 4.
        "ink": _lora(folder, "ink", seed=1, rank=4),
        # A subset of ink's layers, at the slot's full rank.
        "wash": _lora(folder, "wash", seed=2, rank=8, targets=("to_q", "to_v")),
        # Another kind of layer, a small rank and an alpha of its own (metadata).
        "grain": _lora(folder, "grain", seed=3, rank=2, alpha=1, targets=("to_k", "ff.net.2")),
    }


def _config(loras: dict[str, Lora], **fields: Any) -> PipelineConfig:
    slot = slot_for(inspect_lora(lora.path) for lora in loras.values())
    files = tuple((lora.name, str(lora.path), lora.digest) for lora in loras.values())
    return PipelineConfig(
        model_path=BUILTIN_TINY, warmup=False, style_slot=slot, style_loras=files, **fields
    )


@pytest.fixture(scope="module")
def styled(loras: dict[str, Lora]) -> SDXLGenerator:
    return load_generator(_config(loras))


def _fused(lora: Lora, scale: float) -> SDXLGenerator:
    config = PipelineConfig(
        model_path=BUILTIN_TINY, warmup=False, lora_path=str(lora.path), lora_scale=scale
    )
    return load_generator(config)


AVATAR = noise_picture(4)
PLAIN = spec(num_inference_steps=STEPS, width=SIDE, height=SIDE)


def test_the_slot_is_made_for_the_catalogs_largest_rank_and_every_kind(
    styled: SDXLGenerator,
) -> None:
    slot = styled.style_slot
    assert slot is not None
    assert slot.slot.rank == 8
    assert slot.slot.kinds == {"to_q", "to_k", "to_v", "to_out.0", "ff.net.2"}
    # Every catalog LoRA was read and checked at load, and is kept.
    assert {lora.digest for lora in _values(styled)} <= set(slot.cache._entries)


def _values(generator: SDXLGenerator) -> list[Any]:
    assert generator.style_slot is not None
    return list(generator.style_slot.cache._entries.values())


# wash: a subset of layers, after a LoRA on all of them; grain: another kind
# of layer, its alpha from the file's metadata. (ink: the strength test.)
@pytest.mark.parametrize(("name", "scale"), [("wash", 0.6), ("grain", 1.4)])
def test_a_style_draws_what_diffusers_draws_with_its_lora_fused_at_that_scale(
    styled: SDXLGenerator, loras: dict[str, Lora], name: str, scale: float
) -> None:
    lora = loras[name]
    # Another style first, so what the slot held before must not show.
    other = loras["grain" if name != "grain" else "ink"]
    one(styled, other.job(), AVATAR)
    swapped = one(styled, lora.job(scale), AVATAR)
    assert alike(swapped, one(_fused(lora, scale), lora.job(), AVATAR))
    assert not alike(swapped, one(styled, PLAIN, AVATAR))


def test_style_a_then_b_then_a_again_draws_as_a_did(
    styled: SDXLGenerator, loras: dict[str, Lora]
) -> None:
    ink, wash, grain = loras["ink"], loras["wash"], loras["grain"]
    one(styled, PLAIN, AVATAR)
    first = pixels(one(styled, ink.job(0.9), AVATAR))
    one(styled, wash.job(1.5), AVATAR)
    one(styled, grain.job(0.3), AVATAR)
    # The same strength as the next job's, in another LoRA: nothing of it stays.
    one(styled, wash.job(0.9), AVATAR)
    again = pixels(one(styled, ink.job(0.9), AVATAR))
    assert (first == again).all()


def test_a_job_without_a_lora_style_adds_nothing(
    styled: SDXLGenerator, loras: dict[str, Lora]
) -> None:
    plain = dataclasses.replace(PLAIN, style="plain", style_strength=1.0)
    before = pixels(one(styled, plain, AVATAR))
    one(styled, loras["ink"].job(), AVATAR)
    # The slot still holds ink's weights, at scale 0; and a strength of 0.
    assert (pixels(one(styled, plain, AVATAR)) == before).all()
    assert (pixels(one(styled, loras["ink"].job(0.0), AVATAR)) == before).all()
    bare = load_generator(PipelineConfig(model_path=BUILTIN_TINY, warmup=False))
    assert alike(one(bare, plain, AVATAR), Image.fromarray(before.astype("uint8")))


def test_the_strength_scales_the_loras_effect(
    styled: SDXLGenerator, loras: dict[str, Lora]
) -> None:
    ink = loras["ink"]
    half, full = one(styled, ink.job(0.5), AVATAR), one(styled, ink.job(1.0), AVATAR)
    assert not alike(half, full)
    assert alike(half, one(_fused(ink, 0.5), ink.job(), AVATAR))


def test_a_fused_lora_stays_the_base_look_under_every_style(
    loras: dict[str, Lora], tmp_path: Path
) -> None:
    base = make_tiny_lora(tmp_path / "base.safetensors", seed=9)
    styled = load_generator(_config(loras, lora_path=str(base), lora_scale=0.7))
    fused_only = load_generator(
        PipelineConfig(model_path=BUILTIN_TINY, warmup=False, lora_path=str(base), lora_scale=0.7)
    )
    plain = PLAIN
    base_weights = {n: p.detach().clone() for n, p in styled.pipeline.unet.named_parameters()}
    for lora in loras.values():
        one(styled, lora.job(1.2), AVATAR)
    assert alike(one(styled, plain, AVATAR), one(fused_only, plain, AVATAR))
    # The IP-Adapter's own weights carry its per-job scale (ip_scale.py).
    changed = [
        name
        for name, weight in styled.pipeline.unet.named_parameters()
        if ".lora_" not in name and "_ip." not in name
        if not torch.equal(weight, base_weights[name])
    ]
    assert changed == []


def test_swaps_from_the_host_cache_read_no_file_and_it_keeps_its_budget(
    loras: dict[str, Lora], tmp_path: Path
) -> None:
    ink, wash, grain = (loras[n] for n in ("ink", "wash", "grain"))
    generator = load_generator(_config(loras, style_cache_bytes=1))
    slot = generator.style_slot
    assert slot is not None
    # Over budget: used, not kept; each swap reads its file again.
    assert slot.cache.nbytes == 0
    sizes = {n: slot.entry(n, str(loras[n].path), loras[n].digest).nbytes for n in loras}
    slot.cache.max_bytes = sizes["ink"] + sizes["wash"]
    for lora in (ink, wash):
        one(generator, lora.job(), AVATAR)
    # From here, ink and wash come from host memory only: their files are gone.
    moved = {n: loras[n].path.rename(tmp_path / f"{n}.moved") for n in ("ink", "wash")}
    try:
        reads = slot.cache.misses
        for lora in (ink, wash, ink):
            one(generator, lora.job(), AVATAR)
        assert slot.cache.misses == reads
        # grain pushes out the least recently used (wash), never past the budget.
        one(generator, grain.job(), AVATAR)
        assert grain.digest in slot.cache
        assert ink.digest in slot.cache
        assert wash.digest not in slot.cache
        assert slot.cache.nbytes <= slot.cache.max_bytes
        with pytest.raises(StyleError, match=r"'wash': .* cannot be read"):
            one(generator, wash.job(), AVATAR)
    finally:
        for name, path in moved.items():
            path.rename(loras[name].path)


def test_a_swap_copies_only_the_slots_weights(
    styled: SDXLGenerator, loras: dict[str, Lora]
) -> None:
    slot = styled.style_slot
    assert slot is not None
    entry = slot.entry("ink", str(loras["ink"].path), loras["ink"].digest)
    assert set(entry.state_dict) == {
        key for key in entry.state_dict if key.endswith((".lora_A.weight", ".lora_B.weight"))
    }
    # ink's rank-4 matrices: no more than the slot's own rank-8 weights.
    assert 0 < entry.nbytes <= slot.slot_bytes


def test_a_lora_changed_since_its_catalog_was_read_is_refused(
    styled: SDXLGenerator, loras: dict[str, Lora], tmp_path: Path
) -> None:
    changed = make_tiny_lora(tmp_path / "ink.safetensors", seed=99)
    job = dataclasses.replace(loras["ink"].job(), style_lora=str(changed), style_digest="0" * 16)
    with pytest.raises(StyleError, match=r"'ink': .* changed since its catalog was read"):
        one(styled, job, AVATAR)
    # The slot is unharmed: the next job draws as ever.
    one(styled, loras["wash"].job(), AVATAR)


def test_a_lora_the_model_cannot_take_is_refused_at_load_naming_its_style(
    loras: dict[str, Lora], tmp_path: Path
) -> None:
    from tests.support.lora_headers import diffusers_lora

    # SDXL-sized layers on the tiny UNet's names: a LoRA of another model.
    alien = diffusers_lora(tmp_path / "alien.safetensors", rank=4, width=640)
    files = ((lora.name, str(lora.path), lora.digest) for lora in loras.values())
    config = dataclasses.replace(
        _config(loras),
        style_loras=(*files, ("alien", str(alien), file_digest(alien))),
    )
    with pytest.raises(StyleError, match=r"style 'alien': .*(does not hold|do not fit)"):
        load_generator(config)


def _resident_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def big_loras(tmp_path: Path) -> dict[str, Lora]:
    # Large ranks, so a swap that kept a copy would show in the resident size.
    return {
        name: _lora(tmp_path, name, seed=seed, rank=64, targets=targets)
        for name, seed, targets in (
            ("a", 1, ("to_q", "to_k", "to_v", "to_out.0")),
            ("b", 2, ("to_q", "to_v")),
            ("c", 3, ("to_k", "to_out.0")),
        )
    }


def test_two_hundred_swaps_leave_the_resident_memory_where_it_was(
    big_loras: dict[str, Lora],
) -> None:
    generator = load_generator(_config(big_loras))
    slot = generator.style_slot
    assert slot is not None
    jobs = [lora.job(scale) for lora in big_loras.values() for scale in (0.5, 1.0, 1.5)]
    for job in jobs:
        slot.apply(job)
    gc.collect()
    before = _resident_bytes()
    swaps = slot.swaps
    for index in range(200):
        slot.apply(jobs[(index * 4) % len(jobs)])
    gc.collect()
    grown = _resident_bytes() - before
    # Every one of them a swap: each job names another LoRA than the one before.
    assert slot.swaps - swaps == 200
    # One LoRA here is about 2.4 MB: a copy kept per swap would be hundreds.
    assert grown < 8 * 1024 * 1024, f"resident memory grew {grown / 2**20:.1f} MiB"
    print(f"VmRSS before {before / 2**20:.1f} MiB, after 200 swaps {(before + grown) / 2**20:.1f}")
