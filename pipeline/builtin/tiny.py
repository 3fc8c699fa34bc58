"""`builtin:tiny`: small random-weight SDXL + IP-Adapter components built in code.

The components have SDXL's architecture (two CLIP text encoders, a UNet with
text-time conditioning, an 8x VAE, a CLIP vision encoder and an IP-Adapter of
matching shapes) at a size that builds in about a second and draws in well
under one on a CPU. They are fed to the same :class:`pipeline.engine.generator.SDXLGenerator`
as the real model. A fixed initialisation seed makes it the same model every
time, so its (noise) pictures are reproducible across processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from pipeline.api.config import BUILTIN_TINY, IP_ADAPTER_SUBFOLDER, IP_ADAPTER_WEIGHT_NAME
from pipeline.api.errors import ModelLoadError
from pipeline.builtin.clip_bpe import BOS, EOS, VOCAB_SIZE, clip_bpe
from pipeline.engine.reference.clip import clip_feature_extractor
from pipeline.engine.untyped import SDXLPipeline, diffusers, transformers
from pipeline.engine.weights.checkpoints import WeightsKind, load_unet_weights, weights_kind
from pipeline.engine.weights.source import IPAdapterParts, IPAdapterStateDict, ModelSource

TINY_NAME = BUILTIN_TINY
TINY_SEED = 20240611
TINY_LATENT_SIZE = 16
VAE_SCALE_FACTOR = 8
TINY_NATIVE_SIZE = TINY_LATENT_SIZE * VAE_SCALE_FACTOR  # 128 pixels a side
TEXT_HIDDEN = 32
TEXT_PROJECTION = 32
CROSS_ATTENTION_DIM = 2 * TEXT_HIDDEN  # SDXL concatenates both encoders' states
TIME_EMBED_DIM = 8
IMAGE_SIZE = 32
IMAGE_PROJECTION = 32
IP_ADAPTER_TOKENS = 4  # what diffusers assumes for a plain (non-plus) IP-Adapter
MAX_TOKENS = 77

# SDXL's first tokenizer pads with the end token, its second with "!".
TOKENIZER_PADS = (EOS, "!")


def tiny_tokenizer(pad_token: str = EOS) -> Any:
    """A CLIP tokenizer with CLIP's real vocabulary and merges, padded to 77 tokens.

    Prompts are as many tokens long as for the real model, so truncation and
    windowing show in tests exactly as they would in production.
    """
    vocab, merges = clip_bpe()
    return transformers.CLIPTokenizer(
        vocab=dict(vocab),
        merges=list(merges),
        unk_token=EOS,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=pad_token,
        model_max_length=MAX_TOKENS,
    )


def _text_config(vocab_size: int) -> Any:
    return transformers.CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=MAX_TOKENS,
        projection_dim=TEXT_PROJECTION,
        hidden_act="gelu",
        bos_token_id=VOCAB_SIZE - 2,
        eos_token_id=VOCAB_SIZE - 1,
        pad_token_id=VOCAB_SIZE - 1,
    )


def _unet() -> Any:
    return diffusers.UNet2DConditionModel(
        sample_size=TINY_LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        transformer_layers_per_block=(1, 2),
        use_linear_projection=True,
        cross_attention_dim=CROSS_ATTENTION_DIM,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED_DIM,
        # Six time ids (original size, crop, target size) plus the pooled
        # embedding of the second text encoder, as in SDXL.
        projection_class_embeddings_input_dim=6 * TIME_EMBED_DIM + TEXT_PROJECTION,
        norm_num_groups=16,
    )


def _vae() -> Any:
    return diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 16, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=TINY_NATIVE_SIZE,
        scaling_factor=0.13025,
    )


def _scheduler() -> Any:
    # SDXL base 1.0's scheduler configuration.
    return diffusers.EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
        prediction_type="epsilon",
    )


def tiny_image_encoder() -> Any:
    """A two-layer CLIP vision encoder on 32x32 pictures."""
    config = transformers.CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        projection_dim=IMAGE_PROJECTION,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=8,
    )
    return transformers.CLIPVisionModelWithProjection(config).eval()


def random_ip_adapter_weights(
    unet: Any, image_embed_dim: int = IMAGE_PROJECTION
) -> IPAdapterStateDict:
    """Random IP-Adapter weights shaped for `unet`, in the layout of ``ip-adapter_sdxl``.

    ``image_proj`` maps the image embedding to four extra context tokens;
    ``ip_adapter`` holds one key/value projection per cross-attention layer,
    numbered as the original checkpoints number them (odd ids, one per
    attention processor pair, in the UNet's processor order).
    """
    cross = unet.config.cross_attention_dim
    image_proj = {
        "proj.weight": torch.randn(IP_ADAPTER_TOKENS * cross, image_embed_dim) * 0.2,
        "proj.bias": torch.zeros(IP_ADAPTER_TOKENS * cross),
        "norm.weight": torch.ones(cross),
        "norm.bias": torch.zeros(cross),
    }
    ip_adapter: dict[str, torch.Tensor] = {}
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn2.processor"):
            hidden = _attention_width(unet, name)
            for projection in ("to_k_ip", "to_v_ip"):
                ip_adapter[f"{key_id}.{projection}.weight"] = torch.randn(hidden, cross) * 0.2
            key_id += 2
    return {"image_proj": image_proj, "ip_adapter": ip_adapter}


def _attention_width(unet: Any, processor_name: str) -> int:
    channels: tuple[int, ...] = tuple(unet.config.block_out_channels)
    if processor_name.startswith("mid_block"):
        return channels[-1]
    block = int(processor_name.split(".")[1])
    if processor_name.startswith("up_blocks"):
        return channels[::-1][block]
    return channels[block]


@dataclass
class TinyModel:
    """The tiny pipeline (no IP-Adapter loaded yet) and its IP-Adapter parts."""

    pipe: SDXLPipeline
    ip_adapter_weights: IPAdapterStateDict
    image_encoder: Any

    def ip_adapter_parts(self) -> IPAdapterParts:
        """What :func:`pipeline.engine.reference.adapters.attach_ip_adapter` takes."""
        return IPAdapterParts(
            weights=self.ip_adapter_weights,
            image_encoder=self.image_encoder,
            feature_extractor=clip_feature_extractor(IMAGE_SIZE),
        )


def build_tiny() -> TinyModel:
    """Build every tiny component under a fixed seed.

    The caller's random state is left as it was, so building the model never
    changes what a seeded job draws.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        tokenizer, tokenizer_2 = (tiny_tokenizer(pad) for pad in TOKENIZER_PADS)
        text_encoder = transformers.CLIPTextModel(_text_config(len(tokenizer)))
        text_encoder_2 = transformers.CLIPTextModelWithProjection(_text_config(len(tokenizer)))
        unet = _unet()
        pipe = diffusers.StableDiffusionXLPipeline(
            vae=_vae(),
            text_encoder=text_encoder.eval(),
            text_encoder_2=text_encoder_2.eval(),
            tokenizer=tokenizer,
            tokenizer_2=tokenizer_2,
            unet=unet,
            scheduler=_scheduler(),
        )
        return TinyModel(pipe, random_ip_adapter_weights(unet), tiny_image_encoder())


class TinySource(ModelSource):
    """The :class:`ModelSource` behind ``builtin:tiny``.

    A UNet weights file (``weights_file``) is loaded over the tiny UNet just
    as over SDXL's; a whole single-file checkpoint needs a real base model.
    A replacement VAE (``vae_path``) is read as for any model.
    """

    name = TINY_NAME
    expected_native_size = (TINY_NATIVE_SIZE, TINY_NATIVE_SIZE)

    def __init__(self, weights_file: str | None = None, vae_path: str | None = None) -> None:
        self._weights_file = weights_file
        self._vae_path = vae_path
        self._model: TinyModel | None = None

    def base_pipeline(self, dtype: torch.dtype) -> SDXLPipeline:
        """Build the tiny pipeline in `dtype`, with the UNet weights file applied."""
        self._model = build_tiny()
        pipe = self._model.pipe
        if self._weights_file:
            if weights_kind(self._weights_file) is not WeightsKind.UNET:
                raise ModelLoadError(
                    "builtin:tiny takes a UNet weights file only; a whole checkpoint "
                    "needs MODEL_PATH set to its base model"
                )
            load_unet_weights(pipe, self._weights_file)
        if self._vae_path:
            from pipeline.engine.weights.loading import load_vae

            pipe.register_modules(vae=load_vae(self._vae_path, torch.float32))
        if dtype != torch.float32:
            pipe.to(dtype=dtype)
        return pipe

    def ip_adapter(self, dtype: torch.dtype) -> IPAdapterParts:
        """The IP-Adapter parts built alongside the last base pipeline."""
        if self._model is None:
            self._model = build_tiny()
        if dtype != torch.float32:
            self._model.image_encoder.to(dtype=dtype)
        return self._model.ip_adapter_parts()


def save_tiny(directory: str | Path) -> tuple[Path, Path]:
    """Save the tiny model as a diffusers folder and an IP-Adapter folder.

    Returns ``(model_dir, ip_adapter_dir)``: ``model_dir`` loads with
    ``MODEL_PATH``; ``ip_adapter_dir`` has the layout of ``h94/IP-Adapter``
    (``sdxl_models/ip-adapter_sdxl.safetensors`` and
    ``sdxl_models/image_encoder/``) and loads with ``IP_ADAPTER_PATH``.
    """
    root = Path(directory)
    model = build_tiny()
    model_dir = root / "model"
    model.pipe.save_pretrained(model_dir, safe_serialization=True)
    ip_dir = root / "ip_adapter"
    weights_dir = ip_dir / IP_ADAPTER_SUBFOLDER
    model.image_encoder.save_pretrained(weights_dir / "image_encoder", safe_serialization=True)
    save_file(_flatten(model.ip_adapter_weights), str(weights_dir / IP_ADAPTER_WEIGHT_NAME))
    return model_dir, ip_dir


def _flatten(weights: IPAdapterStateDict) -> dict[str, torch.Tensor]:
    return {
        f"{group}.{key}": tensor.contiguous()
        for group, tensors in weights.items()
        for key, tensor in tensors.items()
    }
