"""What a LoRA file's header says, read without torch, and whether it fits the slot."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest

from pipeline.api.lora_files import (
    LoraFacts,
    LoraFileError,
    StyleSlot,
    file_digest,
    inspect_lora,
    refusal,
    slot_for,
)
from tests.support.lora_headers import diffusers_lora, kohya_lora, write_safetensors

ATTENTION = frozenset({"to_q", "to_k", "to_v", "to_out.0"})


def test_a_diffusers_lora_reads_its_rank_layers_kinds_and_size(tmp_path: Path) -> None:
    path = diffusers_lora(tmp_path / "a.safetensors", rank=16, blocks=3)
    facts = inspect_lora(path)
    assert (facts.rank, facts.kinds, facts.unet_layers) == (16, ATTENTION, 12)
    assert (facts.text_encoder_layers, facts.unknown, facts.dtype) == (0, (), "F16")
    assert facts.size == path.stat().st_size
    assert refusal(facts) is None


def test_peft_and_processor_names_are_read_too(tmp_path: Path) -> None:
    block = "unet.mid_block.attentions.0.transformer_blocks.0"
    shapes = {
        f"{block}.attn2.to_k.lora_A.weight": [8, 2048],
        f"{block}.attn2.to_k.lora_B.weight": [1280, 8],
        f"{block}.attn1.processor.to_out_lora.down.weight": [4, 1280],
        f"{block}.attn1.processor.to_out_lora.up.weight": [1280, 4],
        f"{block}.ff.net.0.proj.lora_A.weight": [2, 1280],
        f"{block}.ff.net.0.proj.lora_B.weight": [10240, 2],
    }
    facts = inspect_lora(write_safetensors(tmp_path / "p.safetensors", shapes, dtype="BF16"))
    assert (facts.rank, facts.unet_layers, facts.dtype) == (8, 3, "BF16")
    assert facts.kinds == {"to_k", "to_out.0", "ff.net.0.proj"}


def test_kohya_names_are_read_by_their_endings(tmp_path: Path) -> None:
    modules = (
        "input_blocks_4_1_transformer_blocks_0_attn1_to_q",
        "output_blocks_2_1_transformer_blocks_1_ff_net_2",
        "middle_block_1_proj_in",
    )
    facts = inspect_lora(kohya_lora(tmp_path / "k.safetensors", modules, rank=32))
    assert (facts.rank, facts.unet_layers) == (32, 3)
    assert facts.kinds == {"to_q", "ff.net.2", "proj_in"}
    assert refusal(facts) is None


def test_a_lora_with_text_encoder_layers_is_refused(tmp_path: Path) -> None:
    facts = inspect_lora(diffusers_lora(tmp_path / "t.safetensors", text_encoder=True))
    assert facts.text_encoder_layers == 2
    assert "text-encoder LoRAs cannot be hotswapped" in (refusal(facts) or "")
    kohya = write_safetensors(tmp_path / "k.safetensors", {"lora_te2_x.lora_down.weight": [4, 8]})
    assert "text-encoder" in (refusal(inspect_lora(kohya)) or "")


def test_layers_no_slot_holds_are_refused(tmp_path: Path) -> None:
    conv = kohya_lora(tmp_path / "c.safetensors", ("input_blocks_1_0_in_layers_2",))
    assert inspect_lora(conv).kinds == {"in_layers_2"}
    assert "it targets in_layers_2; a style's LoRA may target only" in (
        refusal(inspect_lora(conv)) or ""
    )
    time = diffusers_lora(tmp_path / "t.safetensors", kinds=("time_emb_proj",))
    assert "it targets time_emb_proj" in (refusal(inspect_lora(time)) or "")


@pytest.mark.parametrize(
    "key",
    [
        "unet.down_blocks.0.attn1.to_q.lokr_w1",
        "lora_unet_down_blocks_0_attn1_to_q.hada_w1_a",
        "lora_unet_down_blocks_0_attn1_to_q.dora_scale",
        "base_model.model.down_blocks.0.attn1.to_q.lora_A.weight",
    ],
)
def test_keys_of_no_understood_format_are_refused(tmp_path: Path, key: str) -> None:
    facts = inspect_lora(write_safetensors(tmp_path / "x.safetensors", {key: [4, 4]}))
    assert facts.unknown == (key,)
    assert "keys of no LoRA format understood" in (refusal(facts) or "")


def test_a_lora_of_no_unet_layer_is_refused(tmp_path: Path) -> None:
    facts = inspect_lora(write_safetensors(tmp_path / "e.safetensors", {}))
    assert refusal(facts) == "it holds no UNet LoRA layer"


def test_the_slot_holds_the_largest_rank_and_every_kind() -> None:
    small = StyleSlot(4, frozenset({"to_q"}))
    facts = [
        inspect_facts(rank=8, kinds={"to_q", "to_v"}),
        inspect_facts(rank=32, kinds={"ff.net.2"}),
    ]
    assert slot_for(facts) == StyleSlot(32, frozenset({"to_q", "to_v", "ff.net.2"}))
    assert slot_for([]) is None
    assert small.refusal(inspect_facts(rank=4, kinds={"to_q"})) is None
    assert small.refusal(inspect_facts(rank=8, kinds={"to_q"})) == "its rank 8 is over the slot's 4"
    assert small.refusal(inspect_facts(rank=2, kinds={"to_q", "to_k"})) == (
        "it targets to_k, outside the slot's layers (to_q)"
    )
    none = StyleSlot(0, frozenset())
    assert "no LoRA slot" in (none.refusal(inspect_facts(rank=2, kinds={"to_q"})) or "")


def inspect_facts(*, rank: int, kinds: set[str]) -> LoraFacts:
    return LoraFacts(rank, frozenset(kinds), len(kinds), 0, (), 1, "F16")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"abc", "too short"),
        (struct.pack("<Q", 10**9) + b"{}", "bad header length"),
        (struct.pack("<Q", 3) + b"{{{", "header is not JSON"),
        (struct.pack("<Q", 2) + b"[]", "header is not an object"),
        (struct.pack("<Q", 19) + b'{"x": {"shape": 1}}', "has no valid shape"),
    ],
)
def test_a_malformed_file_is_refused_saying_why(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(LoraFileError, match=reason):
        inspect_lora(path)


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(LoraFileError, match="does not exist"):
        inspect_lora(tmp_path / "none.safetensors")
    with pytest.raises(LoraFileError, match="is a folder"):
        inspect_lora(tmp_path)


def test_the_digest_is_the_start_of_the_files_sha256(tmp_path: Path) -> None:
    path = diffusers_lora(tmp_path / "a.safetensors")
    assert file_digest(path) == hashlib.sha256(path.read_bytes()).hexdigest()[:16]
