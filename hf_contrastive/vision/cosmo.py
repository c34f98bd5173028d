"""COSMO (Wang et al. 2024, "COSMO: COntrastive Streamlined MultimOdal Model with Interleaved Pre-Training"):
one causal language model trained with a language-modelling loss and an image-text contrastive loss.

The language model is split at `unimodal_depth`: its first `unimodal_depth` decoder layers read text only; a
Flamingo gated cross-attention block (Alayrac et al. 2022) runs before every later layer `idx` with
`(idx - unimodal_depth) % cross_attn_interval == 0` (every other layer from the split). The images go through a
vision tower (any transformers vision model) and a Perceiver resampler; resampler token 0, averaged over a
text's images, is the global visual embedding, the other tokens are the media tokens the cross-attention reads.

- The gated block is `x <- x + tanh(a) * XAttn(LN(x), media)`, then `x <- x + tanh(f) * FF(x)`, with `a = f = 0`
  at initialisation, so that an untrained model computes exactly the language model it wraps. A text token
  attends only to the media of the immediately preceding `<image>` token (the `<image>` token itself included);
  tokens before any image attend to nothing (their attention output is 0).
- Contrastive head: learned-query attention pooling (+ feed-forward, LayerNorm) over the output of the last
  text-only layer, projected to `contrastive_dim`; the global visual embedding projected likewise; both
  L2-normalised; `logits = sim * exp(t)` with `t` learnable and initialised at `contrastive_temperature`
  (a *log* scale: the paper's 0.2 multiplies the similarities by e^0.2 = 1.22, it does not divide them by
  0.2); symmetric cross-entropy over this process's batch (local negatives).
- Loss: `L = L_LM + contrastive_weight * L_con` on image-text batches; batches flagged `interleaved` (documents
  with several images) get `L_LM` only.

The cross-attention is attached to the wrapped language model through forward pre-hooks on its decoder
layers, so the language model keeps its own modules and weight names (`lm.model.layers.N...`), and `generate`
is the language model's own `generate` with the media of the prompt held for the whole call. Under activation
checkpointing transformers checkpoints a layer's `forward`, not its hooks, so the blocks run once, outside the
replayed part (the gradients equal those of a run without checkpointing).

What this module settles where the specification leaves a choice (readings, not the paper's stated method):

- `hidden_states[unimodal_depth - 1]` is read as the output of the last text-only layer (0-based layer
  `unimodal_depth - 1`, before any cross-attention), which is `hidden_states[unimodal_depth]` in transformers'
  numbering (whose entry 0 is the embedding output);
- the pooled text states leave out padding and `<image>` tokens (the `<image>` token carries no image
  information in the text-only layers);
- "feed-forward compressed x2" is read as the Flamingo feed-forward with a hidden width of 2x the model width
  instead of Flamingo's 4x (`cross_attn_ff_mult=2`);
- the pooler's feed-forward is residual: `LN(p + FF(p))` over the attention-pooled `p`;
- the resampler is Flamingo's (latents attend to the concatenation of the image tokens and the latents, then a
  feed-forward; final LayerNorm), without the per-frame time embeddings (images only, no video);
- `num_latents` counts token 0 (the global embedding): `num_latents - 1` media tokens per image.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from datasets import Dataset
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PretrainedConfig,
    PreTrainedModel,
    Trainer,
    TrainingArguments,
)
from transformers import initialization as init
from transformers.utils import ModelOutput

from hf_contrastive.core.boundary import corrupt_file_errors
from hf_contrastive.core.checkpoint import AtomicCheckpointMixin
from hf_contrastive.core.configuration import backbone_hidden_size, register_auto_classes
from hf_contrastive.core.data.checks import require_rows
from hf_contrastive.core.engines import EngineMixin
from hf_contrastive.core.hub.card import ModelCardInfo
from hf_contrastive.core.hub.mixin import HubMixin, adapter_details
from hf_contrastive.core.losses.base import ContrastiveLoss, LossOutput, check_2d
from hf_contrastive.core.peft import apply_peft
from hf_contrastive.vision.data import load_coco_captions
from hf_contrastive.vision.hydra import image_to_pixels
from hf_contrastive.vision.losses import CLIPLoss
from hf_contrastive.vision.modeling import load_image

logger = logging.getLogger(__name__)

__all__ = [
    "COSMO_CITATION",
    "FREEZE_MODES",
    "CosmoAttentionPooler",
    "CosmoCollator",
    "CosmoConfig",
    "CosmoContrastiveLoss",
    "CosmoForCausalLM",
    "CosmoGatedCrossAttention",
    "CosmoOutput",
    "CosmoPerceiverResampler",
    "CosmoTrainer",
    "CosmoTrainingArguments",
    "caption_perplexity",
    "check_unimodal_depth",
    "coco_caption_rows",
    "cross_attention_layer_indices",
    "freeze_language_model",
    "media_index",
    "retrieval_embeddings",
]

COSMO_CITATION = """@article{wang2024cosmo,
  title     = {COSMO: COntrastive Streamlined MultimOdal Model with Interleaved Pre-Training},
  author    = {Wang, Alex Jinpeng and Li, Linjie and Lin, Kevin Qinghong and Wang, Jianfeng and Lin, Kevin and
               Yang, Zhengyuan and Wang, Lijuan and Shou, Mike Zheng},
  journal   = {arXiv preprint arXiv:2401.00849},
  year      = {2024}
}"""

FLAMINGO_CITATION = """@inproceedings{alayrac2022flamingo,
  title     = {Flamingo: a Visual Language Model for Few-Shot Learning},
  author    = {Alayrac, Jean-Baptiste and Donahue, Jeff and Luc, Pauline and Miech, Antoine and others},
  booktitle = {Advances in Neural Information Processing Systems},
  year      = {2022}
}"""

FREEZE_MODES = ("none", "text_layers", "lm")
"""What [`freeze_language_model`] freezes: nothing, the token embeddings and the text-only layers, or every weight
of the wrapped language model (Flamingo's setting: only the new modules train)."""


# -- small helpers ------------------------------------------------------------------------------------------


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _finite(name: str, value: Any, low: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}.")
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}.")
    return float(value)


def _sub_config(name: str, config: PretrainedConfig | dict[str, Any] | None) -> PretrainedConfig | None:
    if isinstance(config, dict):
        if "model_type" not in config:
            raise ValueError(f"{name} as a dict needs a 'model_type' key (e.g. 'llama', 'vit').")
        config = AutoConfig.for_model(**config)
    if config is not None and not isinstance(config, PretrainedConfig):
        raise TypeError(f"{name} must be a PretrainedConfig or a dict, got {type(config).__name__}.")
    return config


def num_decoder_layers(text_config: Any) -> int:
    """Number of decoder layers of a language model's config (`num_hidden_layers`, or `n_layer` for GPT-2)."""
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(text_config, key, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    raise ValueError(f"Cannot find the number of layers of {type(text_config).__name__}.")


def check_unimodal_depth(unimodal_depth: Any, num_layers: int) -> int:
    """`unimodal_depth` checked against a language model of `num_layers` layers.

    The split leaves at least one text-only layer (whose output the contrastive head pools) and at least one
    multimodal layer (before which the first cross-attention runs): `1 <= unimodal_depth <= num_layers - 1`.

    Args:
        unimodal_depth (`int`): number of text-only layers (12 in the paper's 180M configuration).
        num_layers (`int`): decoder layers of the language model.

    Returns:
        `int`: `unimodal_depth`, checked.

    Raises:
        `ValueError`: naming the layer count, for a split outside the model.
    """
    if isinstance(unimodal_depth, bool) or not isinstance(unimodal_depth, int):
        raise ValueError(f"unimodal_depth must be an integer, got {unimodal_depth!r}.")
    if not 1 <= unimodal_depth <= num_layers - 1:
        raise ValueError(
            f"unimodal_depth={unimodal_depth} is outside the language model, which has {num_layers} layers: the "
            f"split must leave text-only and multimodal layers, so it must be between 1 and {num_layers - 1}."
        )
    return unimodal_depth


def cross_attention_layer_indices(num_layers: int, unimodal_depth: int, interval: int = 2) -> list[int]:
    """The decoder layers before which a gated cross-attention block runs: every `idx >= unimodal_depth` with
    `(idx - unimodal_depth) % interval == 0` (COSMO: every other layer from the split).

    Args:
        num_layers (`int`): layers of the language model.
        unimodal_depth (`int`): text-only layers (checked by [`check_unimodal_depth`]).
        interval (`int`, *optional*, defaults to `2`): spacing of the blocks.
    """
    check_unimodal_depth(unimodal_depth, num_layers)
    interval = _positive_int("cross_attn_interval", interval)
    return [i for i in range(unimodal_depth, num_layers) if (i - unimodal_depth) % interval == 0]


def media_index(
    input_ids: torch.Tensor, image_token_id: int, offset: torch.Tensor | None = None
) -> torch.Tensor:
    """For each token, the (1-based) number of the latest `<image>` token at or before it; 0 before any image.

    A text token attends to the media of that image only (Flamingo's "immediately preceding media").

    Args:
        input_ids (`torch.LongTensor` of shape `(B, L)`): token ids.
        image_token_id (`int`): id of the `<image>` token.
        offset (`torch.LongTensor` of shape `(B,)`, *optional*): images seen before these tokens (during cached
            generation: those of the tokens already processed).

    Returns:
        `torch.LongTensor` of shape `(B, L)`.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape [B, L], got {tuple(input_ids.shape)}.")
    index = (input_ids == image_token_id).long().cumsum(dim=1)
    if offset is not None:
        index = index + offset.to(index.device).long()[:, None]
    return index


# -- configuration --------------------------------------------------------------------------------------------


class CosmoConfig(PretrainedConfig):
    r"""Configuration of [`CosmoForCausalLM`]: the language model, the vision tower, the split, the gated
    cross-attention, the resampler and the contrastive head. Defaults follow COSMO's configuration as the
    specification gives it (Wang et al. 2024), except where the docstring says otherwise.

    Args:
        text_config (`PretrainedConfig | dict`, *optional*): the causal language model's configuration (Llama
            family, e.g. SmolLM2); required by the model.
        vision_config (`PretrainedConfig | dict`, *optional*): the vision tower's configuration (any transformers
            vision model whose `last_hidden_state` is a token sequence or a feature map); required by the model.
        unimodal_depth (`int`, *optional*): text-only layers; default half of the language model's layers
            (COSMO's 12 of 24). Must be between 1 and the layer count minus 1.
        cross_attn_interval (`int`, *optional*, defaults to `2`): a cross-attention block every this many layers
            from the split.
        cross_attn_heads (`int`, *optional*, defaults to `8`): heads of the cross-attention.
        cross_attn_dim_head (`int`, *optional*, defaults to `64`): width of each head.
        cross_attn_ff_mult (`int`, *optional*, defaults to `2`): the block's feed-forward width over the model
            width (Flamingo's 4 halved: our reading of "compressed x2").
        num_latents (`int`, *optional*, defaults to `64`): resampler tokens per image, token 0 (the global
            embedding) included.
        resampler_depth (`int`, *optional*, defaults to `6`): resampler layers (Flamingo's 6).
        resampler_heads (`int`, *optional*, defaults to `8`): resampler attention heads.
        resampler_dim_head (`int`, *optional*, defaults to `64`): width of each resampler head.
        resampler_ff_mult (`int`, *optional*, defaults to `4`): resampler feed-forward width over its width.
        contrastive_dim (`int`, *optional*, defaults to `512`): width both sides are projected to.
        contrastive_temperature (`float`, *optional*, defaults to `0.2`): initial value of the learnable
            *log*-scale `t` (logits = similarity * exp(t); 0.2 multiplies by 1.22).
        contrastive_weight (`float`, *optional*, defaults to `1.0`): weight of the contrastive loss.
        pooler_heads (`int`, *optional*, defaults to `8`): heads of the text-side attention pooling.
        pooler_ff_mult (`int`, *optional*, defaults to `4`): width of the pooler's feed-forward.
        image_token (`str`, *optional*, defaults to `"<image>"`): the token that marks an image in the text.
        image_token_id (`int`, *optional*): its id in the tokenizer (set by [`CosmoForCausalLM.from_parts`]).
        image_size (`int`, *optional*): side of the square images (default: the vision config's, else 224).
        image_mean (`Sequence[float]`, *optional*, defaults to `(0.5, 0.5, 0.5)`): per-channel mean.
        image_std (`Sequence[float]`, *optional*, defaults to `(0.5, 0.5, 0.5)`): per-channel deviation.
        max_new_tokens (`int`, *optional*, defaults to `20`): default caption length of `generate`.
        initializer_range (`float`, *optional*, defaults to `0.02`): deviation of the new modules' weights.
        lm_name_or_path (`str`, *optional*): where the language model's weights came from (for the card).
    """

    model_type = "cosmo_lm"
    sub_configs = {"text_config": AutoConfig, "vision_config": AutoConfig}
    keys_to_ignore_at_inference = [
        "logits",
        "text_embeds",
        "image_embeds",
        "logits_per_text",
        "logit_scale",
        "lm_loss",
        "contrastive_loss",
    ]

    def __init__(
        self,
        text_config: PretrainedConfig | dict[str, Any] | None = None,
        vision_config: PretrainedConfig | dict[str, Any] | None = None,
        unimodal_depth: int | None = None,
        cross_attn_interval: int = 2,
        cross_attn_heads: int = 8,
        cross_attn_dim_head: int = 64,
        cross_attn_ff_mult: int = 2,
        num_latents: int = 64,
        resampler_depth: int = 6,
        resampler_heads: int = 8,
        resampler_dim_head: int = 64,
        resampler_ff_mult: int = 4,
        contrastive_dim: int = 512,
        contrastive_temperature: float = 0.2,
        contrastive_weight: float = 1.0,
        pooler_heads: int = 8,
        pooler_ff_mult: int = 4,
        image_token: str = "<image>",
        image_token_id: int | None = None,
        image_size: int | None = None,
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
        max_new_tokens: int = 20,
        initializer_range: float = 0.02,
        lm_name_or_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.text_config = _sub_config("text_config", text_config)
        self.vision_config = _sub_config("vision_config", vision_config)
        for name, value in (
            ("cross_attn_interval", cross_attn_interval),
            ("cross_attn_heads", cross_attn_heads),
            ("cross_attn_dim_head", cross_attn_dim_head),
            ("cross_attn_ff_mult", cross_attn_ff_mult),
            ("resampler_depth", resampler_depth),
            ("resampler_heads", resampler_heads),
            ("resampler_dim_head", resampler_dim_head),
            ("resampler_ff_mult", resampler_ff_mult),
            ("contrastive_dim", contrastive_dim),
            ("pooler_heads", pooler_heads),
            ("pooler_ff_mult", pooler_ff_mult),
            ("max_new_tokens", max_new_tokens),
        ):
            setattr(self, name, _positive_int(name, value))
        if isinstance(num_latents, bool) or not isinstance(num_latents, int) or num_latents < 2:
            raise ValueError(
                f"num_latents must be an integer >= 2 (token 0 is the global embedding, the others are media "
                f"tokens), got {num_latents!r}."
            )
        self.num_latents = num_latents
        if self.text_config is not None:
            layers = num_decoder_layers(self.text_config)
            if unimodal_depth is None:
                unimodal_depth = max(1, layers // 2)
            check_unimodal_depth(unimodal_depth, layers)
            width = backbone_hidden_size(self.text_config, "CosmoConfig")
            if width % self.pooler_heads:
                raise ValueError(
                    f"pooler_heads={self.pooler_heads} must divide the language model's width {width}."
                )
        self.unimodal_depth = unimodal_depth
        self.contrastive_temperature = _finite("contrastive_temperature", contrastive_temperature)
        self.contrastive_weight = _finite("contrastive_weight", contrastive_weight, low=0.0)
        if not isinstance(image_token, str) or not image_token:
            raise ValueError(f"image_token must be a non-empty string, got {image_token!r}.")
        self.image_token = image_token
        self.image_token_id = None if image_token_id is None else int(image_token_id)
        if image_size is None:
            side = getattr(self.vision_config, "image_size", None)
            image_size = side if isinstance(side, int) else 224
        self.image_size = _positive_int("image_size", image_size)
        self.image_mean = [float(v) for v in image_mean]
        self.image_std = [float(v) for v in image_std]
        self.initializer_range = _finite("initializer_range", initializer_range, low=0.0)
        self.lm_name_or_path = None if lm_name_or_path is None else str(lm_name_or_path)
        super().__init__(**kwargs)

    @property
    def lm_hidden_size(self) -> int:
        """Width of the language model's token states."""
        return backbone_hidden_size(self.text_config, type(self).__name__)

    @property
    def vision_hidden_size(self) -> int:
        """Width of the vision tower's tokens (the last stage's channels for convolutional towers)."""
        sizes = getattr(self.vision_config, "hidden_sizes", None)
        if isinstance(sizes, (list, tuple)) and sizes and isinstance(sizes[-1], int):
            return int(sizes[-1])
        return backbone_hidden_size(self.vision_config, type(self).__name__)

    @property
    def num_layers(self) -> int:
        """Decoder layers of the language model."""
        return num_decoder_layers(self.text_config)

    @property
    def cross_attention_layers(self) -> list[int]:
        """The layers before which a gated cross-attention block runs ([`cross_attention_layer_indices`])."""
        return cross_attention_layer_indices(self.num_layers, self.unimodal_depth, self.cross_attn_interval)


# -- modules --------------------------------------------------------------------------------------------------


def _feed_forward(dim: int, mult: int) -> nn.Sequential:
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, dim * mult, bias=False),
        nn.GELU(),
        nn.Linear(dim * mult, dim, bias=False),
    )


class _PerceiverAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        inner = heads * dim_head
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, media: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        # media [B, T, N, D], latents [B, T, K, D]
        b, t, k, _ = latents.shape
        media, latents = self.norm_media(media), self.norm_latents(latents)
        q = self.to_q(latents)
        kv = self.to_kv(torch.cat([media, latents], dim=2))
        key, value = kv.chunk(2, dim=-1)

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(b, t, x.shape[2], self.heads, self.dim_head).transpose(2, 3)

        q, key, value = heads(q), heads(key), heads(value)
        attn = torch.softmax((q * self.dim_head**-0.5) @ key.transpose(-1, -2), dim=-1)
        out = (attn @ value).transpose(2, 3).reshape(b, t, k, self.heads * self.dim_head)
        return self.to_out(out)


class CosmoPerceiverResampler(nn.Module):
    """Flamingo's Perceiver resampler: `num_latents` learned tokens attend to an image's tokens (and to themselves)
    through `depth` layers of attention and feed-forward, then a LayerNorm.

    Args:
        dim (`int`): width of the vision tower's tokens (and of the latents).
        depth (`int`): layers.
        heads (`int`): attention heads.
        dim_head (`int`): width of each head.
        num_latents (`int`): output tokens per image (token 0 is the global visual embedding).
        ff_mult (`int`): feed-forward width over `dim`.
    """

    def __init__(
        self, dim: int, depth: int, heads: int, dim_head: int, num_latents: int, ff_mult: int
    ) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_latents, dim) * 0.02)
        self.layers = nn.ModuleList(
            [
                nn.ModuleList([_PerceiverAttention(dim, heads, dim_head), _feed_forward(dim, ff_mult)])
                for _ in range(depth)
            ]
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, media: torch.Tensor) -> torch.Tensor:
        """`[B, T, N, dim]` image tokens -> `[B, T, num_latents, dim]`."""
        b, t = media.shape[:2]
        latents = self.latents.to(media.dtype).expand(b, t, *self.latents.shape)
        for attn, ff in self.layers:
            latents = attn(media, latents) + latents
            latents = ff(latents) + latents
        return self.norm(latents)


class CosmoGatedCrossAttention(nn.Module):
    """Flamingo's gated cross-attention block (tanh gates initialised at 0):
    `x <- x + tanh(a) * XAttn(LN(x), media)`, then `x <- x + tanh(f) * FF(x)`.

    Each text token attends only to the media tokens of the image given by its [`media_index`] (the immediately
    preceding `<image>`); a token with index 0 (no image before it) gets a zero attention output.

    Args:
        dim (`int`): the language model's width.
        media_dim (`int`): the media tokens' width.
        heads (`int`): attention heads.
        dim_head (`int`): width of each head.
        ff_mult (`int`): the feed-forward's width over `dim`.
    """

    def __init__(self, dim: int, media_dim: int, heads: int, dim_head: int, ff_mult: int) -> None:
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        inner = heads * dim_head
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(media_dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)
        self.attn_gate = nn.Parameter(torch.zeros(1))
        self.ff = _feed_forward(dim, ff_mult)
        self.ff_gate = nn.Parameter(torch.zeros(1))

    def attention_weights(self, x: torch.Tensor, media: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """`[B, heads, L, T * K]` attention of each text token over the flattened media tokens (0 where masked)."""
        return self._attend(x, media, index)[1]

    def _attend(
        self, x: torch.Tensor, media: torch.Tensor, index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, length, _ = x.shape
        t, k = media.shape[1], media.shape[2]
        media = media.to(x.dtype).reshape(b, t * k, media.shape[-1])
        q = self.to_q(self.norm(x)).reshape(b, length, self.heads, self.dim_head).transpose(1, 2)
        key, value = self.to_kv(media).chunk(2, dim=-1)
        key = key.reshape(b, t * k, self.heads, self.dim_head).transpose(1, 2)
        value = value.reshape(b, t * k, self.heads, self.dim_head).transpose(1, 2)
        scores = (q * self.dim_head**-0.5) @ key.transpose(-1, -2)
        media_time = torch.arange(1, t + 1, device=x.device).repeat_interleave(k)
        allowed = index.to(x.device)[:, None, :, None] == media_time[None, None, None, :]
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        attn = torch.softmax(scores, dim=-1)
        attn = attn.masked_fill((index.to(x.device) == 0)[:, None, :, None], 0.0)
        out = (attn @ value).transpose(1, 2).reshape(b, length, self.heads * self.dim_head)
        return self.to_out(out), attn

    def forward(
        self, x: torch.Tensor, media: torch.Tensor | None, index: torch.Tensor | None
    ) -> torch.Tensor:
        """`[B, L, dim]` text states -> the same, with the gated attention and feed-forward added.

        Args:
            x (`torch.Tensor` of shape `(B, L, dim)`): text states entering the decoder layer.
            media (`torch.Tensor` of shape `(B, T, K, media_dim)`, *optional*): media tokens of `T` images;
                `None`: no image (the attention term is 0, the gated feed-forward still applies).
            index (`torch.LongTensor` of shape `(B, L)`, *optional*): [`media_index`] of each token.
        """
        if media is not None and media.shape[1] > 0:
            out, _ = self._attend(x, media, index)
            x = x + torch.tanh(self.attn_gate).to(x.dtype) * out
        return x + torch.tanh(self.ff_gate).to(x.dtype) * self.ff(x)


class CosmoAttentionPooler(nn.Module):
    """Learned-query attention pooling of token states, then a residual feed-forward and a LayerNorm:
    `p = MHA(q, LN(H), LN(H))`, `out = LN(p + FF(p))`.

    Args:
        dim (`int`): width of the token states.
        heads (`int`): attention heads (dividing `dim`).
        ff_mult (`int`): feed-forward width over `dim`.
    """

    def __init__(self, dim: int, heads: int, ff_mult: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, dim) * 0.02)
        self.norm_states = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ff = _feed_forward(dim, ff_mult)
        self.norm = nn.LayerNorm(dim)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`[B, L, dim]` states and a `[B, L]` mask (1 = pooled) -> `[B, dim]`."""
        empty = ~mask.bool().any(dim=1)
        if bool(empty.any()):
            rows = empty.nonzero().flatten().tolist()
            raise ValueError(f"Rows {rows[:8]} have no text token to pool (only padding or image tokens).")
        kv = self.norm_states(states)
        q = self.query.to(kv.dtype).expand(states.shape[0], 1, -1)
        pooled, _ = self.attn(q, kv, kv, key_padding_mask=~mask.bool(), need_weights=False)
        pooled = pooled[:, 0]
        return self.norm(pooled + self.ff(pooled))


# -- the loss -------------------------------------------------------------------------------------------------


class CosmoContrastiveLoss(ContrastiveLoss):
    r"""COSMO's image-text contrastive loss: symmetric cross-entropy over `logits = n(T) n(I)^T * exp(t)`.

    `t` is a *log*-scale (COSMO's `contrastive_temperature: 0.2` initialises `t`, so the similarities are
    multiplied by e^0.2 = 1.22, not divided by 0.2). Negatives are the other rows of this process's batch only
    (COSMO's "local negatives"; no gathering across processes). Built on the wing's [`CLIPLoss`] with `gather`
    off.

    Args:
        label_smoothing (`float`, *optional*, defaults to `0.0`): label smoothing of both cross-entropies.

    Example::

        loss = CosmoContrastiveLoss()
        out = loss(text_features, image_features, model.logit_scale)  # the log-scale, not exp of it
    """

    citation = COSMO_CITATION

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.clip = CLIPLoss(label_smoothing=label_smoothing, gather=False)

    def config_dict(self) -> dict[str, Any]:
        return {"label_smoothing": self.clip.label_smoothing, "negatives": "local", "scale": "exp(log_scale)"}

    def forward(
        self, text_features: torch.Tensor, image_features: torch.Tensor, log_scale: torch.Tensor | float
    ) -> LossOutput:
        """Loss of `[B, D]` text and image features (row `i` of each is a pair; normalised here).

        Args:
            text_features (`torch.Tensor` of shape `(B, D)`): projected text embeddings.
            image_features (`torch.Tensor` of shape `(B, D)`): projected global visual embeddings.
            log_scale (`torch.Tensor | float`): the learnable `t`; the logits are multiplied by `exp(t)`.

        Returns:
            [`LossOutput`] with components `image_to_text`, `text_to_image`, `logit_scale` (= exp(t)) and
            `accuracy`.
        """
        owner = type(self).__name__
        check_2d("text_features", text_features, owner)
        check_2d("image_features", image_features, owner)
        if text_features.shape != image_features.shape:
            raise ValueError(
                f"{owner}: text_features {tuple(text_features.shape)} and image_features "
                f"{tuple(image_features.shape)} must have the same shape (one image per text)."
            )
        t = log_scale if isinstance(log_scale, torch.Tensor) else torch.tensor(float(log_scale))
        if t.numel() != 1:
            raise ValueError(f"{owner}: log_scale must be a scalar, got shape {tuple(t.shape)}.")
        scale = t.reshape(()).to(text_features.device, torch.float32 if t.dtype != torch.float64 else t.dtype)
        return self.clip(F.normalize(image_features, dim=-1), F.normalize(text_features, dim=-1), scale.exp())


# -- the model ------------------------------------------------------------------------------------------------


@dataclass
class CosmoOutput(ModelOutput):
    """Output of [`CosmoForCausalLM`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): `lm_loss + contrastive_weight * contrastive_loss`
            (the contrastive term only on image-text batches), when `labels` are given.
        logits (`torch.FloatTensor` of shape `(B, L, vocab)`): the language model's logits.
        lm_loss (`torch.FloatTensor` of shape `()`, *optional*): the language model's cross-entropy.
        contrastive_loss (`torch.FloatTensor` of shape `()`, *optional*): the contrastive term (None on interleaved
            batches and batches without images).
        text_embeds (`torch.FloatTensor` of shape `(B, contrastive_dim)`, *optional*): L2-normalised text embeddings.
        image_embeds (`torch.FloatTensor` of shape `(B, contrastive_dim)`, *optional*): L2-normalised global visual
            embeddings.
        logits_per_text (`torch.FloatTensor` of shape `(B, B)`, *optional*): `exp(t) * text_embeds @ image_embeds^T`.
        logit_scale (`torch.FloatTensor` of shape `()`, *optional*): `exp(t)`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    lm_loss: torch.FloatTensor | None = None
    contrastive_loss: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    logit_scale: torch.FloatTensor | None = None


class _StopAfterTextLayers(Exception):
    """Raised by the capture hook to end a forward after the text-only layers (text embeddings only)."""


@dataclass
class _MediaState:
    media: torch.Tensor | None = None
    index: torch.Tensor | None = None
    offset: torch.Tensor | None = None
    incremental: bool = False
    text_states: torch.Tensor | None = None
    stop_after_text: bool = False


def _decoder_layers(lm: PreTrainedModel) -> tuple[nn.Module, nn.ModuleList]:
    base = getattr(lm, getattr(lm, "base_model_prefix", "model"), None)
    for holder in (base, getattr(base, "decoder", None)):
        for name in ("layers", "h"):
            layers = getattr(holder, name, None) if holder is not None else None
            if isinstance(layers, nn.ModuleList):
                return holder, layers
    raise ValueError(
        f"Cannot find the decoder layers of {type(lm).__name__} (looked for .layers / .h on its base model): "
        "COSMO needs a decoder-only causal LM such as Llama, Mistral, Qwen2 or GPT-2."
    )


class CosmoPreTrainedModel(PreTrainedModel):
    """Base of [`CosmoForCausalLM`]: config class, input name and the initialisation of the new modules."""

    config_class = CosmoConfig
    base_model_prefix = "cosmo"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    # The loss combines a token mean and a batch mean: Trainer divides it by the accumulation steps itself.
    accepts_loss_kwargs = False

    def _init_weights(self, module: nn.Module) -> None:
        # Only the new modules; the language model and the vision tower initialise (or load) themselves.
        std = self.config.initializer_range
        if isinstance(
            module,
            (CosmoGatedCrossAttention, CosmoPerceiverResampler, CosmoAttentionPooler, _PerceiverAttention),
        ):
            for sub in module.modules():
                if isinstance(sub, nn.Linear):
                    init.normal_(sub.weight, mean=0.0, std=std)
                    if sub.bias is not None:
                        init.zeros_(sub.bias)
                elif isinstance(sub, nn.LayerNorm):
                    init.ones_(sub.weight)
                    init.zeros_(sub.bias)
                elif isinstance(sub, nn.MultiheadAttention):
                    init.normal_(sub.in_proj_weight, mean=0.0, std=std)
                    init.zeros_(sub.in_proj_bias)
                    init.zeros_(sub.out_proj.bias)
            if isinstance(module, CosmoGatedCrossAttention):
                init.zeros_(module.attn_gate)
                init.zeros_(module.ff_gate)
            if isinstance(module, CosmoPerceiverResampler):
                init.normal_(module.latents, mean=0.0, std=std)
            if isinstance(module, CosmoAttentionPooler):
                init.normal_(module.query, mean=0.0, std=std)
        elif isinstance(module, CosmoForCausalLM):
            init.normal_(module.text_projection.weight, mean=0.0, std=std)
            init.normal_(module.visual_projection.weight, mean=0.0, std=std)
            init.constant_(module.logit_scale, self.config.contrastive_temperature)


class CosmoForCausalLM(HubMixin, CosmoPreTrainedModel):
    r"""COSMO (Wang et al. 2024): a causal LM split into text-only and multimodal layers, Flamingo gated
    cross-attention to resampled image tokens, and an image-text contrastive head on the text-only layers.

    See the module docstring for the architecture and [`CosmoConfig`] for the settings. `forward` takes token ids
    in which `config.image_token` marks each image and `pixel_values` `[B, T, 3, S, S]` (or `[B, 3, S, S]` for one
    image per text), and returns the language-model loss plus the weighted contrastive loss (skipped on batches
    flagged `interleaved`). With zero gates (as initialised) the logits are exactly those of the wrapped LM.

    Args:
        config ([`CosmoConfig`]): the settings; `text_config` and `vision_config` are required.
        lm (`PreTrainedModel`, *optional*): a loaded causal LM (default: built from `config.text_config`).
        vision_model (`PreTrainedModel`, *optional*): a loaded vision tower (default: built from
            `config.vision_config`).
        tokenizer (`Any`, *optional*): the LM's tokenizer with the image token (saved with the model).

    Example::

        >>> model = CosmoForCausalLM.from_parts(lm, ViTConfig(image_size=32, patch_size=8, hidden_size=64,
        ...     num_hidden_layers=2, num_attention_heads=4, intermediate_size=128), tokenizer, unimodal_depth=1)
        >>> out = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, labels=labels)
        >>> out.loss.backward()
    """

    card_template = "cosmo_lm.md"
    card_pipeline_tag = "image-text-to-text"
    card_tags = ("image-captioning", "contrastive-learning", "cosmo", "flamingo")
    card_citations = (COSMO_CITATION, FLAMINGO_CITATION)

    def __init__(
        self,
        config: CosmoConfig,
        lm: PreTrainedModel | None = None,
        vision_model: PreTrainedModel | None = None,
        tokenizer: Any = None,
    ) -> None:
        super().__init__(config)
        if config.text_config is None or config.vision_config is None:
            raise ValueError(
                "CosmoConfig needs text_config and vision_config (use CosmoForCausalLM.from_parts to start from a "
                "language model and a vision tower)."
            )
        self.lm = lm if lm is not None else AutoModelForCausalLM.from_config(config.text_config)
        self.vision_model = (
            vision_model if vision_model is not None else AutoModel.from_config(config.vision_config)
        )
        for sub in (self.lm, self.vision_model):
            if getattr(sub.config, "_attn_implementation", None) is None:
                sub.config._attn_implementation = "sdpa" if getattr(sub, "_supports_sdpa", False) else "eager"
        layers = num_decoder_layers(self.lm.config)
        if layers != config.num_layers:
            raise ValueError(
                f"The language model has {layers} layers, its config in CosmoConfig {config.num_layers}."
            )
        check_unimodal_depth(config.unimodal_depth, layers)
        dim, vdim = config.lm_hidden_size, config.vision_hidden_size
        self.resampler = CosmoPerceiverResampler(
            vdim,
            config.resampler_depth,
            config.resampler_heads,
            config.resampler_dim_head,
            config.num_latents,
            config.resampler_ff_mult,
        )
        self.cross_attention = nn.ModuleDict(
            {
                str(i): CosmoGatedCrossAttention(
                    dim, vdim, config.cross_attn_heads, config.cross_attn_dim_head, config.cross_attn_ff_mult
                )
                for i in config.cross_attention_layers
            }
        )
        self.text_pooler = CosmoAttentionPooler(dim, config.pooler_heads, config.pooler_ff_mult)
        self.text_projection = nn.Linear(dim, config.contrastive_dim, bias=False)
        self.visual_projection = nn.Linear(vdim, config.contrastive_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.contrastive_temperature)))
        self.tokenizer = tokenizer
        self.__dict__["_state"] = _MediaState()
        self._attach_hooks()
        self.post_init()

    # -- hooks --------------------------------------------------------------------------------------------------

    def _attach_hooks(self) -> None:
        base, layers = _decoder_layers(self.lm)
        state: _MediaState = self.__dict__["_state"]
        image_token_id = self.config.image_token_id

        def before_base(module: nn.Module, args: tuple, kwargs: dict) -> None:
            input_ids = kwargs.get("input_ids", args[0] if args else None)
            if input_ids is None:
                if state.media is not None:
                    raise ValueError(
                        "COSMO with images needs input_ids (the <image> tokens place the media)."
                    )
                state.index = None
                return None
            offset = state.offset if state.incremental else None
            ids = input_ids if image_token_id is not None else torch.zeros_like(input_ids)
            index = media_index(ids, image_token_id if image_token_id is not None else -1, offset)
            if state.media is not None:
                available = state.media.shape[1]
                if int(index.max()) > available:
                    raise ValueError(
                        f"A text refers to image {int(index.max())} (counting its {self.config.image_token} tokens) "
                        f"but only {available} image(s) per text were given."
                    )
            elif (
                not state.stop_after_text
                and image_token_id is not None
                and bool((input_ids == image_token_id).any())
            ):
                raise ValueError(
                    f"The text holds {self.config.image_token} tokens but no pixel_values were given."
                )
            state.index = index
            if state.incremental:
                state.offset = index[:, -1].clone()
            return None

        self._hook_handles = [base.register_forward_pre_hook(before_base, with_kwargs=True)]
        for idx in self.config.cross_attention_layers:
            self._hook_handles.append(
                layers[idx].register_forward_pre_hook(self._cross_attention_hook(str(idx)), with_kwargs=True)
            )

        def capture(module: nn.Module, args: tuple, output: Any) -> None:
            state.text_states = output[0] if isinstance(output, (tuple, list)) else output
            if state.stop_after_text:
                raise _StopAfterTextLayers

        self._hook_handles.append(layers[self.config.unimodal_depth - 1].register_forward_hook(capture))

    def _cross_attention_hook(self, key: str):
        state: _MediaState = self.__dict__["_state"]

        def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            block = self.cross_attention[key]
            if args:
                hidden = block(args[0], state.media, state.index)
                return (hidden, *args[1:]), kwargs
            kwargs = dict(kwargs)
            kwargs["hidden_states"] = block(kwargs["hidden_states"], state.media, state.index)
            return args, kwargs

        return hook

    # -- construction -------------------------------------------------------------------------------------------

    @classmethod
    def from_parts(
        cls,
        lm: str | os.PathLike | PreTrainedModel,
        vision: str | os.PathLike | PretrainedConfig | PreTrainedModel,
        tokenizer: Any = None,
        lm_kwargs: Mapping[str, Any] | None = None,
        **config_kwargs: Any,
    ) -> CosmoForCausalLM:
        """A new COSMO model on a causal LM and a vision tower; the new modules are freshly initialised.

        The tokenizer gets `config.image_token` as an added special token when it lacks it, and the LM's token
        embeddings are resized to match (the new row is initialised by transformers' resizing).

        Args:
            lm (`str | os.PathLike | PreTrainedModel`): the causal LM (a folder or Hub id, or a loaded model with
                `tokenizer=`).
            vision (`str | os.PathLike | PretrainedConfig | PreTrainedModel`): the vision tower: a folder / Hub id
                (pretrained weights), a config (trained from scratch) or a model.
            tokenizer (`Any`, *optional*): the LM's tokenizer (loaded from `lm`'s folder when `lm` is a path).
            lm_kwargs (`Mapping[str, Any]`, *optional*): loading options of the LM's `from_pretrained`.
            config_kwargs (`Any`): other [`CosmoConfig`] settings (`unimodal_depth`, `num_latents`...).
        """
        name = None
        if isinstance(lm, (str, os.PathLike)):
            name = os.fspath(lm)
            lm = AutoModelForCausalLM.from_pretrained(name, **dict(lm_kwargs or {}))
            if tokenizer is None:
                tokenizer = AutoTokenizer.from_pretrained(name)
        elif not isinstance(lm, PreTrainedModel):
            raise TypeError(f"lm must be a path or a PreTrainedModel, got {type(lm).__name__}.")
        else:
            name = getattr(lm.config, "_name_or_path", None) or None
        if tokenizer is None:
            raise ValueError("CosmoForCausalLM.from_parts needs the LM's tokenizer (tokenizer=).")
        if isinstance(vision, PreTrainedModel):
            vision_model = vision
        elif isinstance(vision, PretrainedConfig):
            vision_model = AutoModel.from_config(vision)
        elif isinstance(vision, (str, os.PathLike)):
            vision_model = AutoModel.from_pretrained(os.fspath(vision))
        else:
            raise TypeError(
                f"vision must be a folder / Hub id, a PretrainedConfig or a PreTrainedModel, got {type(vision).__name__}."
            )
        image_token = config_kwargs.pop("image_token", "<image>")
        if image_token not in tokenizer.get_vocab():
            tokenizer.add_special_tokens({"additional_special_tokens": [image_token]})
        image_token_id = int(tokenizer.convert_tokens_to_ids(image_token))
        if image_token_id >= lm.get_input_embeddings().weight.shape[0]:
            lm.resize_token_embeddings(len(tokenizer))
        config = CosmoConfig(
            text_config=lm.config.to_dict(),
            vision_config=vision_model.config.to_dict(),
            image_token=image_token,
            image_token_id=image_token_id,
            lm_name_or_path=name,
            **config_kwargs,
        )
        model = cls(config, lm=lm, vision_model=vision_model, tokenizer=tokenizer)
        if name and not os.path.exists(name):
            model.card_info.base_model = name
        return model

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any):
        """Load a saved model (with its tokenizer and card metadata when the folder has them).

        Args:
            pretrained_model_name_or_path (`str | os.PathLike`): a folder written by `save_pretrained`, or a Hub id.
            args (`Any`): passed to `PreTrainedModel.from_pretrained`.
            kwargs (`Any`): passed to `PreTrainedModel.from_pretrained` (`dtype`, `revision`, ...).
        """
        with corrupt_file_errors(pretrained_model_name_or_path):
            model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        folder = Path(pretrained_model_name_or_path)
        if folder.is_dir():
            if (folder / "tokenizer_config.json").is_file():
                model.tokenizer = AutoTokenizer.from_pretrained(folder)
            model.card_info = ModelCardInfo.from_folder(folder)
        return model

    def get_input_embeddings(self) -> nn.Module:
        return self.lm.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.lm.set_input_embeddings(value)

    # -- images ---------------------------------------------------------------------------------------------------

    def _pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(f"pixel_values must be a tensor, got {type(pixel_values).__name__}.")
        if pixel_values.dim() == 4:
            pixel_values = pixel_values[:, None]
        if pixel_values.dim() != 5:
            raise ValueError(
                f"pixel_values must have shape [B, T, C, H, W] (or [B, C, H, W]), got {tuple(pixel_values.shape)}."
            )
        return pixel_values

    def encode_images(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The resampled images: `(global [B, vision_dim], media [B, T, num_latents - 1, vision_dim])`.

        The global visual embedding is resampler token 0 averaged over each text's `T` images.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(B, T, C, H, W)` or `(B, C, H, W)`): the images.
        """
        pixels = self._pixels(pixel_values)
        b, t = pixels.shape[:2]
        weight = self.visual_projection.weight
        out = self.vision_model(pixel_values=pixels.flatten(0, 1).to(weight.device, weight.dtype))
        tokens = out.last_hidden_state
        if tokens.dim() == 4:  # a feature map [B, C, H, W] -> tokens [B, H * W, C]
            tokens = tokens.flatten(2).transpose(1, 2)
        if tokens.dim() != 3:
            raise ValueError(
                f"The vision tower returns states of shape {tuple(tokens.shape)}; expected tokens."
            )
        latents = self.resampler(tokens.reshape(b, t, *tokens.shape[1:]))
        return latents[:, :, 0].mean(dim=1), latents[:, :, 1:]

    # -- text -----------------------------------------------------------------------------------------------------

    def _pool_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        mask = (
            torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        )
        if self.config.image_token_id is not None:
            mask = mask & (input_ids != self.config.image_token_id)
        return mask

    def _text_embeds(
        self, states: torch.Tensor, input_ids: torch.Tensor, attention_mask: Any
    ) -> torch.Tensor:
        pooled = self.text_pooler(states, self._pool_mask(input_ids, attention_mask).to(states.device))
        return self.text_projection(pooled)

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, normalize: bool = True
    ) -> torch.Tensor:
        """Contrastive text embeddings `[B, contrastive_dim]`; the forward stops after the text-only layers.

        Args:
            input_ids (`torch.LongTensor` of shape `(B, L)`): token ids (`<image>` tokens are left out of the
                pooling).
            attention_mask (`torch.LongTensor` of shape `(B, L)`, *optional*): 1 for real tokens.
            normalize (`bool`, *optional*, defaults to `True`): L2-normalise.
        """
        state: _MediaState = self.__dict__["_state"]
        state.stop_after_text, state.text_states = True, None
        try:
            self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        except _StopAfterTextLayers:
            pass
        finally:
            state.stop_after_text = False
        states, state.text_states = state.text_states, None
        embeds = self._text_embeds(states, input_ids, attention_mask)
        return F.normalize(embeds, dim=-1) if normalize else embeds

    def encode_image(self, pixel_values: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Contrastive image embeddings `[B, contrastive_dim]` (the projected global visual embedding)."""
        embeds = self.visual_projection(self.encode_images(pixel_values)[0])
        return F.normalize(embeds, dim=-1) if normalize else embeds

    # -- forward ----------------------------------------------------------------------------------------------------

    @staticmethod
    def _interleaved_flag(interleaved: Any) -> bool:
        if interleaved is None:
            return False
        if isinstance(interleaved, torch.Tensor):
            values = interleaved.flatten().bool()
            if values.numel() == 0:
                return False
            if bool(values.any()) != bool(values.all()):
                raise ValueError(
                    "A batch is either image-text or interleaved: got a mix of interleaved flags. Build separate "
                    "batches for each kind."
                )
            return bool(values[0])
        return bool(interleaved)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        interleaved: bool | torch.Tensor | None = None,
        return_loss: bool | None = None,
        **kwargs: Any,
    ) -> CosmoOutput:
        r"""Language-model logits with the images' cross-attention, and the COSMO loss.

        Args:
            input_ids (`torch.LongTensor` of shape `(B, L)`): token ids; each `config.image_token` marks the place
                of the next image of the row.
            attention_mask (`torch.Tensor` of shape `(B, L)`, *optional*): 1 for real tokens.
            pixel_values (`torch.FloatTensor` of shape `(B, T, C, H, W)` or `(B, C, H, W)`, *optional*): the
                images of each row, in the order of their tokens.
            labels (`torch.LongTensor` of shape `(B, L)`, *optional*): LM targets (-100 on the image tokens, the
                prompt and padding); with them the output holds the loss.
            interleaved (`bool | torch.Tensor`, *optional*): the batch holds interleaved documents: the contrastive
                loss is skipped (all rows of a batch must agree).
            return_loss (`bool`, *optional*): compute the contrastive term even without `labels` (default: with
                labels).
            kwargs (`Any`): passed to the language model (`use_cache`, `output_attentions`...).
        """
        owner = type(self).__name__
        if input_ids is None or not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            raise ValueError(f"{owner}.forward needs input_ids of shape [B, L].")
        kwargs.pop("return_dict", None)
        kwargs.pop("num_items_in_batch", None)
        is_interleaved = self._interleaved_flag(interleaved)
        global_visual = media = None
        if pixel_values is not None:
            pixels = self._pixels(pixel_values)
            if pixels.shape[0] != input_ids.shape[0]:
                raise ValueError(
                    f"{owner}: pixel_values hold images for {pixels.shape[0]} rows, input_ids has {input_ids.shape[0]}."
                )
            global_visual, media = self.encode_images(pixels)
        state: _MediaState = self.__dict__["_state"]
        state.media, state.offset, state.incremental, state.text_states = media, None, False, None
        try:
            out = self.lm(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
        finally:
            state.media, state.index = None, None
        text_states, state.text_states = state.text_states, None
        output = CosmoOutput(logits=out.logits, lm_loss=out.loss)
        want_con = return_loss if return_loss is not None else labels is not None
        if global_visual is not None and not is_interleaved and want_con:
            text = self._text_embeds(text_states, input_ids, attention_mask)
            image = self.visual_projection(global_visual)
            result = CosmoContrastiveLoss()(text, image, self.logit_scale)
            output.contrastive_loss = result.loss
            output.text_embeds = F.normalize(text, dim=-1)
            output.image_embeds = F.normalize(image, dim=-1)
            output.logit_scale = self.logit_scale.exp()
            output.logits_per_text = output.logit_scale * output.text_embeds @ output.image_embeds.T
            self.__dict__["_last_components"] = {
                "contrastive_loss": result.loss.detach(),
                "contrastive_accuracy": result.components["accuracy"],
                "logit_scale": result.components["logit_scale"],
            }
        else:
            self.__dict__["_last_components"] = {}
        if out.loss is not None:
            self.__dict__["_last_components"]["lm_loss"] = out.loss.detach()
            loss = out.loss
            if output.contrastive_loss is not None and self.config.contrastive_weight > 0:
                # transformers computes the LM loss in float32; a float64 model keeps its contrastive precision
                dtype = torch.promote_types(loss.dtype, output.contrastive_loss.dtype)
                loss = loss.to(dtype) + self.config.contrastive_weight * output.contrastive_loss.to(dtype)
            output.loss = loss
        elif output.contrastive_loss is not None:
            output.loss = self.config.contrastive_weight * output.contrastive_loss
        return output

    @property
    def last_loss_components(self) -> dict[str, torch.Tensor]:
        """The named loss terms of the latest `forward` (for logging)."""
        return dict(self.__dict__.get("_last_components", {}))

    # -- generation -------------------------------------------------------------------------------------------------

    def _special_ids(self) -> dict[str, Any]:
        tok, cfg = self.tokenizer, self.lm.config
        eos = getattr(tok, "eos_token_id", None) if tok is not None else None
        if eos is None:
            eos = getattr(cfg, "eos_token_id", None)
        pad = getattr(tok, "pad_token_id", None) if tok is not None else None
        if pad is None:
            pad = getattr(cfg, "pad_token_id", None)
        if pad is None:
            pad = eos[0] if isinstance(eos, list) else eos
        return {"eos_token_id": eos, "pad_token_id": pad}

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        max_new_tokens: int | None = None,
        **generate_kwargs: Any,
    ) -> torch.LongTensor:
        """Greedy continuation of prompts that hold `<image>` tokens (captioning: `"<image>"` alone).

        The images are resampled once; the language model's own `generate` runs with the cache, each new token
        attending to the media of the last image before it. Left-pad batched prompts of different lengths.

        Args:
            input_ids (`torch.LongTensor` of shape `(B, L)`): the prompts.
            pixel_values (`torch.FloatTensor` of shape `(B, T, C, H, W)` or `(B, C, H, W)`, *optional*): images.
            attention_mask (`torch.Tensor` of shape `(B, L)`, *optional*): 1 for real tokens.
            max_new_tokens (`int`, *optional*): defaults to `config.max_new_tokens`.
            generate_kwargs (`Any`): further `GenerationConfig` settings; beam search and several sequences per
                prompt are refused (the media are held per prompt row).

        Returns:
            `torch.LongTensor`: `[B, L + new]` the prompts and their continuations.
        """
        for key in ("num_beams", "num_return_sequences"):
            if int(generate_kwargs.get(key, 1) or 1) != 1:
                raise ValueError(
                    f"{type(self).__name__}.generate decodes one sequence per prompt ({key} must be 1): the media "
                    "are held per prompt row."
                )
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape [B, L], got {tuple(input_ids.shape)}.")
        media = None
        if pixel_values is not None:
            pixels = self._pixels(pixel_values)
            if pixels.shape[0] != input_ids.shape[0]:
                raise ValueError(
                    f"pixel_values hold {pixels.shape[0]} rows for {input_ids.shape[0]} prompts."
                )
            media = self.encode_images(pixels)[1]
        settings = {
            "max_new_tokens": int(max_new_tokens or self.config.max_new_tokens),
            "do_sample": False,
            "num_beams": 1,
            **self._special_ids(),
        }
        settings.update(generate_kwargs)
        state: _MediaState = self.__dict__["_state"]
        state.media, state.incremental = media, True
        state.offset = torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
        try:
            return self.lm.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                generation_config=GenerationConfig(**settings),
            )
        finally:
            state.media, state.index, state.offset, state.incremental = None, None, None, False

    def caption(
        self, images: Sequence[Any], prompt: str = "", batch_size: int = 16, **generate_kwargs: Any
    ) -> list[str]:
        """Captions of images (paths or PIL images): greedy continuation of `"<image>" + prompt`.

        Args:
            images (`Sequence[Any]`): paths or PIL images (resized and normalised as the config says).
            prompt (`str`, *optional*, defaults to `""`): text after the image token.
            batch_size (`int`, *optional*, defaults to `16`): images per `generate` call.
            generate_kwargs (`Any`): `max_new_tokens` and other [`generate`] settings.
        """
        if self.tokenizer is None:
            raise ValueError(
                "caption() needs a tokenizer: set model.tokenizer or load a folder that has one."
            )
        prompt_ids = [
            self.config.image_token_id,
            *self.tokenizer(prompt, add_special_tokens=False)["input_ids"],
        ]
        device = self.visual_projection.weight.device
        out: list[str] = []
        was_training = self.training
        self.eval()
        try:
            for start in range(0, len(images), batch_size):
                chunk = list(images[start : start + batch_size])
                pixels = torch.stack([self._image(im) for im in chunk]).to(device)
                ids = torch.tensor([prompt_ids] * len(chunk), dtype=torch.long, device=device)
                new = self.generate(ids, pixels, torch.ones_like(ids), **generate_kwargs)[:, ids.shape[1] :]
                out.extend(t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True))
        finally:
            self.train(was_training)
        return out

    def _image(self, image: Any) -> torch.Tensor:
        config = self.config
        return image_to_pixels(image, config.image_size, config.image_mean, config.image_std)

    # -- card ---------------------------------------------------------------------------------------------------

    def card_details(self) -> dict[str, Any]:
        config = self.config
        lm_type = getattr(config.text_config, "model_type", None)
        return {
            "title": "COSMO image-text language model",
            "description": (
                "A causal language model extended with COSMO (Wang et al. 2024) by "
                "[hf-contrastive](https://github.com/hf-contrastive/hf-contrastive): Flamingo gated cross-attention "
                "to resampled image tokens in its upper layers and an image-text contrastive head on its text-only "
                "layers, trained with the language-modelling and contrastive losses."
            ),
            "backbone_type": lm_type,
            "lm_architecture": type(self.lm).__name__,
            "vision_architecture": type(self.vision_model).__name__,
            "vision_type": getattr(config.vision_config, "model_type", None),
            "num_layers": config.num_layers,
            "unimodal_depth": config.unimodal_depth,
            "cross_attention_layers": config.cross_attention_layers,
            "cross_attn_ff_mult": config.cross_attn_ff_mult,
            "num_latents": config.num_latents,
            "resampler_depth": config.resampler_depth,
            "contrastive_dim": config.contrastive_dim,
            "contrastive_temperature": config.contrastive_temperature,
            "logit_scale": f"{float(self.logit_scale.detach().exp()):.4g}",
            "contrastive_weight": config.contrastive_weight,
            "image_token": config.image_token,
            "image_size": config.image_size,
            "lm_source": config.lm_name_or_path,
        }


register_auto_classes(CosmoConfig, CosmoForCausalLM)


# -- data -------------------------------------------------------------------------------------------------------


def coco_caption_rows(split: str = "train", root: str | os.PathLike | None = None) -> Dataset:
    """One row per (image, caption) pair of a COCO caption split: `image` (path), `text`, `image_id`.

    Args:
        split (`str`, *optional*, defaults to `"train"`): `"train"` or `"val"`.
        root (`str | os.PathLike`, *optional*): the COCO folder (default: the shared coco-mini copy).
    """
    images = load_coco_captions(split, root=root)
    data: dict[str, list[Any]] = {"image": [], "text": [], "image_id": []}
    for image, captions, image_id in zip(images["image"], images["captions"], images["image_id"]):
        for caption in captions:
            data["image"].append(image)
            data["text"].append(caption)
            data["image_id"].append(int(image_id))
    return Dataset.from_dict(data)


class CosmoCollator:
    r"""Rows -> `input_ids`, `attention_mask`, `labels`, `pixel_values` `[B, T, 3, S, S]` and `interleaved`.

    - Image-text rows `{image, text}`: the tokens are `<image>` + the caption's tokens + the end token; labels are
      the caption and end tokens (-100 on the image token and padding). `pixel_values` is `[B, 1, 3, S, S]`.
    - Interleaved rows `{images: [...], text}`: `text` holds one `config.image_token` per image, in order; labels
      are every token but the image tokens and padding; rows with fewer images are padded with zero images
      (no token refers to them). The batch is flagged `interleaved` (no contrastive loss).

    All rows of a batch must be of one kind. Tokens are right-padded; captions are cut at `max_length` tokens
    (end token included), an interleaved text at `max_length` tokens without cutting an image token off (such a
    row is refused).

    Args:
        tokenizer (`Any`): the LM's tokenizer, holding the image token.
        image_token (`str`, *optional*, defaults to `"<image>"`): the image token.
        image_size (`int`, *optional*, defaults to `224`): side of the square images.
        image_mean (`Sequence[float]`, *optional*, defaults to `(0.5, 0.5, 0.5)`): per-channel mean.
        image_std (`Sequence[float]`, *optional*, defaults to `(0.5, 0.5, 0.5)`): per-channel deviation.
        max_length (`int`, *optional*, defaults to `32`): tokens kept per caption / `4 * max_length` per
            interleaved text.
        image_transform (`Any`, *optional*): PIL image -> `[3, S, S]` tensor, instead of the plain resize.
    """

    def __init__(
        self,
        tokenizer: Any,
        image_token: str = "<image>",
        image_size: int = 224,
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
        max_length: int = 32,
        image_transform: Any = None,
    ) -> None:
        if tokenizer is None:
            raise ValueError("CosmoCollator needs the LM's tokenizer.")
        if image_token not in tokenizer.get_vocab():
            raise ValueError(
                f"The tokenizer has no {image_token!r} token; build the model with CosmoForCausalLM.from_parts (it "
                "adds the token) and use its tokenizer."
            )
        if getattr(tokenizer, "eos_token_id", None) is None:
            raise ValueError("The tokenizer has no end token (eos_token_id): the captions could not end.")
        self.tokenizer = tokenizer
        self.image_token = image_token
        self.image_token_id = int(tokenizer.convert_tokens_to_ids(image_token))
        self.image_size = _positive_int("image_size", image_size)
        self.image_mean, self.image_std = list(image_mean), list(image_std)
        self.max_length = _positive_int("max_length", max_length)
        self.image_transform = image_transform
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else tokenizer.eos_token_id)

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any = None, **kwargs: Any) -> CosmoCollator:
        """The collator of a [`CosmoForCausalLM`] (its tokenizer, image token, size and normalisation)."""
        base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
        config = base.config
        settings = {
            "image_token": config.image_token,
            "image_size": config.image_size,
            "image_mean": config.image_mean,
            "image_std": config.image_std,
        }
        settings.update(kwargs)
        return cls(tokenizer if tokenizer is not None else base.tokenizer, **settings)

    def _pixels(self, image: Any) -> torch.Tensor:
        if self.image_transform is not None:
            return self.image_transform(load_image(image))
        return image_to_pixels(image, self.image_size, self.image_mean, self.image_std)

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("CosmoCollator got an empty batch.")
        kinds = {"images" in row for row in rows}
        if len(kinds) > 1:
            raise ValueError(
                "A batch is either image-text rows {image, text} or interleaved rows {images, text}."
            )
        interleaved = kinds.pop()
        seqs, labels, images = [], [], []
        eos = self.tokenizer.eos_token_id
        for i, row in enumerate(rows):
            text = row.get("text")
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"Row {i}: 'text' must be a non-empty string, got {text!r:.80}.")
            if not interleaved:
                if "image" not in row:
                    raise ValueError(f"Row {i} has no 'image' column (columns: {sorted(row)}).")
                caption = self.tokenizer(text.strip(), add_special_tokens=False)["input_ids"]
                target = list(caption[: self.max_length - 1]) + [eos]
                seqs.append([self.image_token_id, *target])
                labels.append([-100, *target])
                images.append([self._pixels(row["image"])])
                continue
            row_images = list(row["images"])
            ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + [eos]
            count = sum(1 for t in ids if t == self.image_token_id)
            if count != len(row_images):
                raise ValueError(
                    f"Row {i}: the text holds {count} {self.image_token} token(s) for {len(row_images)} image(s)."
                )
            limit = 4 * self.max_length
            if len(ids) > limit:
                if sum(1 for t in ids[:limit] if t == self.image_token_id) != count:
                    raise ValueError(
                        f"Row {i}: cutting the text at {limit} tokens would drop an {self.image_token} token; "
                        "shorten the document or raise max_length."
                    )
                ids = ids[:limit]
            seqs.append(ids)
            labels.append([-100 if t == self.image_token_id else t for t in ids])
            images.append([self._pixels(im) for im in row_images])
        width = max(len(s) for s in seqs)
        t_max = max(len(im) for im in images)
        if t_max == 0:
            raise ValueError("An interleaved batch needs at least one image.")
        shape = images[0][0].shape if images[0] else next(im[0].shape for im in images if im)
        pixel_rows = [torch.stack([*im, *[torch.zeros(shape)] * (t_max - len(im))]) for im in images]
        return {
            "input_ids": torch.tensor([s + [self.pad_id] * (width - len(s)) for s in seqs], dtype=torch.long),
            "attention_mask": torch.tensor(
                [[1] * len(s) + [0] * (width - len(s)) for s in seqs], dtype=torch.long
            ),
            "labels": torch.tensor([s + [-100] * (width - len(s)) for s in labels], dtype=torch.long),
            "pixel_values": torch.stack(pixel_rows),
            "interleaved": torch.tensor(interleaved),
        }


# -- evaluation ---------------------------------------------------------------------------------------------------


@torch.no_grad()
def caption_perplexity(
    model: CosmoForCausalLM, rows: Sequence[Mapping[str, Any]], collator: CosmoCollator, batch_size: int = 16
) -> dict[str, float]:
    """Perplexity of captions given their images: `exp(sum NLL / tokens)` over caption and end tokens.

    Args:
        model ([`CosmoForCausalLM`]): the model (set to eval mode for the call).
        rows (`Sequence[Mapping]`): image-text rows `{image, text}`.
        collator ([`CosmoCollator`]): makes the batches.
        batch_size (`int`, *optional*, defaults to `16`): rows per forward.

    Returns:
        `{"perplexity", "nll_per_token", "tokens"}`.
    """
    was_training = model.training
    model.eval()
    device = model.visual_projection.weight.device
    total, tokens = 0.0, 0
    try:
        for start in range(0, len(rows), batch_size):
            batch = collator([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
            batch = {k: v.to(device) for k, v in batch.items()}
            labels = batch.pop("labels")
            logits = model(**batch, return_loss=False).logits.float()
            shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
            nll = F.cross_entropy(
                shift_logits.transpose(1, 2), shift_labels, ignore_index=-100, reduction="sum"
            )
            total += float(nll)
            tokens += int((shift_labels != -100).sum())
    finally:
        model.train(was_training)
    mean = total / max(tokens, 1)
    return {"perplexity": math.exp(mean), "nll_per_token": mean, "tokens": tokens}


@torch.no_grad()
def retrieval_embeddings(
    model: CosmoForCausalLM,
    images: Sequence[Any],
    texts: Sequence[str],
    collator: CosmoCollator,
    batch_size: int = 32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised contrastive embeddings `(images [N, D], texts [M, D])` (float32, CPU), for
    `hf_contrastive.vision.evaluation.image_text_retrieval_metrics`. A text is embedded as the model reads it in
    training (`<image>` + caption; the image token is left out of the pooling), through the text-only layers.

    Args:
        model ([`CosmoForCausalLM`]): the model (set to eval mode for the call).
        images (`Sequence[Any]`): paths or PIL images.
        texts (`Sequence[str]`): captions.
        collator ([`CosmoCollator`]): tokenises the captions and loads the images.
        batch_size (`int`, *optional*, defaults to `32`): items per forward.
    """
    was_training = model.training
    model.eval()
    device = model.visual_projection.weight.device
    image_parts, text_parts = [], []
    try:
        for start in range(0, len(images), batch_size):
            pixels = torch.stack([collator._pixels(im) for im in images[start : start + batch_size]])
            image_parts.append(model.encode_image(pixels[:, None].to(device)).float().cpu())
        for start in range(0, len(texts), batch_size):
            rows = [{"image": None, "text": t} for t in texts[start : start + batch_size]]
            ids, mask = _caption_ids(collator, rows)
            text_parts.append(model.encode_text(ids.to(device), mask.to(device)).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(image_parts), torch.cat(text_parts)


def _caption_ids(
    collator: CosmoCollator, rows: Sequence[Mapping[str, Any]]
) -> tuple[torch.Tensor, torch.Tensor]:
    eos = collator.tokenizer.eos_token_id
    seqs = []
    for row in rows:
        caption = collator.tokenizer(str(row["text"]).strip(), add_special_tokens=False)["input_ids"]
        seqs.append([collator.image_token_id, *caption[: collator.max_length - 1], eos])
    width = max(len(s) for s in seqs)
    ids = torch.tensor([s + [collator.pad_id] * (width - len(s)) for s in seqs], dtype=torch.long)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], dtype=torch.long)
    return ids, mask


# -- training ---------------------------------------------------------------------------------------------------


def freeze_language_model(model: CosmoForCausalLM, mode: str = "text_layers") -> dict[str, int]:
    """Freeze parts of the wrapped language model; the new modules and the vision tower stay trainable.

    Args:
        model ([`CosmoForCausalLM`]): the model.
        mode (`str`, *optional*, defaults to `"text_layers"`): `"none"`, `"text_layers"` (token embeddings and
            the first `unimodal_depth` layers) or `"lm"` (every weight of the language model).

    Returns:
        `{"trainable": n, "frozen": m}` parameter counts of the whole model.
    """
    if mode not in FREEZE_MODES:
        raise ValueError(f"Unknown freeze mode {mode!r}; expected one of {FREEZE_MODES}.")
    if mode == "lm":
        model.lm.requires_grad_(False)
    elif mode == "text_layers":
        _, layers = _decoder_layers(model.lm)
        model.lm.get_input_embeddings().requires_grad_(False)
        for layer in list(layers)[: model.config.unimodal_depth]:
            layer.requires_grad_(False)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return {"trainable": trainable, "frozen": frozen}


@dataclass
class CosmoTrainingArguments(TrainingArguments):
    r"""`TrainingArguments` of [`CosmoTrainer`], with COSMO's optimiser defaults (learning rate 5e-4, cosine
    schedule).

    Args:
        freeze (`str`, *optional*, defaults to `"text_layers"`): what of the language model is frozen
            ([`freeze_language_model`]): `"none"`, `"text_layers"` or `"lm"`.
        contrastive_weight (`float`, *optional*): replaces the model's `config.contrastive_weight` for this run
            (and in the saved config); 0 trains with the LM loss alone; `None` keeps it.
        max_length (`int`, *optional*, defaults to `32`): caption tokens kept by the default collator.
        remove_unused_columns (`bool`, *optional*, defaults to `False`): keep the image and text columns.
        report_to (`Any`, *optional*, defaults to `"none"`): loggers.
    """

    learning_rate: float = field(default=5e-4, metadata={"help": "AdamW learning rate (COSMO's 5e-4)."})
    lr_scheduler_type: Any = field(default="cosine", metadata={"help": "COSMO's cosine schedule."})
    freeze: str = field(default="text_layers", metadata={"help": "none, text_layers or lm."})
    contrastive_weight: float | None = field(default=None, metadata={"help": "Override of the loss weight."})
    max_length: int = field(default=32, metadata={"help": "Caption tokens kept by the collator."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the image and text columns."})
    report_to: Any = field(default="none", metadata={"help": "Loggers."})

    def __post_init__(self) -> None:
        if self.freeze not in FREEZE_MODES:
            raise ValueError(f"freeze must be one of {FREEZE_MODES}, got {self.freeze!r}.")
        if self.contrastive_weight is not None:
            _finite("contrastive_weight", self.contrastive_weight, low=0.0)
        _positive_int("max_length", self.max_length)
        super().__post_init__()


def _base_cosmo(model: Any) -> Any:
    return model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model


class CosmoTrainer(AtomicCheckpointMixin, EngineMixin, Trainer):
    r"""`Trainer` for [`CosmoForCausalLM`]: the COSMO loss (LM + weighted contrastive on image-text batches, LM
    only on interleaved ones), with parts of the language model frozen (`args.freeze`) or LoRA on it.

    With `peft_config` (a `LoraConfig` naming the LM's modules, e.g. `q_proj` / `v_proj`), the model is wrapped
    by [`hf_contrastive.core.peft.apply_peft`] and every parameter outside the language model (vision tower,
    resampler, cross-attention, contrastive head) is trained in full; [`save_cosmo`] writes the standalone model
    with the LoRA merged. The logged components are `lm_loss`, `contrastive_loss`, `contrastive_accuracy` and
    `logit_scale` (averaged over the steps of each log).

    Args:
        model (`Any`): a [`CosmoForCausalLM`], or the folder of a saved one.
        args ([`CosmoTrainingArguments`], *optional*): training arguments.
        train_dataset (`Any`, *optional*): rows for the collator (image-text `{image, text}` or interleaved).
        eval_dataset (`Any`, *optional*): the same, for `evaluate()` (its loss).
        data_collator (`Any`, *optional*): defaults to `CosmoCollator.from_model(model)`.
        peft_config (`Any`, *optional*): a `peft.LoraConfig` on the language model.
        kwargs (`Any`): other `Trainer` arguments.
    """

    def __init__(
        self,
        model: Any = None,
        args: CosmoTrainingArguments | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        data_collator: Any = None,
        peft_config: Any = None,
        **kwargs: Any,
    ) -> None:
        if args is None:
            args = CosmoTrainingArguments(output_dir="hf-contrastive-output/cosmo")
        if not isinstance(args, CosmoTrainingArguments):
            raise TypeError(f"args must be CosmoTrainingArguments, got {type(args).__name__}.")
        if isinstance(model, (str, os.PathLike)):
            model = CosmoForCausalLM.from_pretrained(model)
        base = _base_cosmo(model)
        if not isinstance(base, CosmoForCausalLM):
            raise TypeError(f"model must be a CosmoForCausalLM, got {type(base).__name__}.")
        if base.tokenizer is None and data_collator is None:
            raise ValueError("The model has no tokenizer: set model.tokenizer or pass a data_collator.")
        require_rows(train_dataset, name="train_dataset", owner=type(self).__name__)
        require_rows(eval_dataset, name="eval_dataset", owner=type(self).__name__)
        if args.contrastive_weight is not None:
            base.config.contrastive_weight = float(args.contrastive_weight)
        self.freeze_counts = freeze_language_model(base, args.freeze)
        if peft_config is not None:
            cfg = copy.deepcopy(peft_config)
            cfg.task_type = None
            model = apply_peft(model, cfg)
            for name, param in model.named_parameters():
                if ".lm." not in f".{name}" and "lora_" not in name:
                    param.requires_grad_(True)
        collator = data_collator or CosmoCollator.from_model(base, max_length=args.max_length)
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            data_collator=collator,
            processing_class=base.tokenizer,
            **kwargs,
        )
        self.model_accepts_loss_kwargs = False
        self._components: dict[str, list[float]] = defaultdict(list)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        if outputs.loss is None:
            raise ValueError("CosmoTrainer needs labels in every batch (the collator's 'labels').")
        if model.training:
            components = _base_cosmo(self.accelerator.unwrap_model(model)).last_loss_components
            for key, value in components.items():
                self._components[key].append(float(value))
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        with torch.no_grad():
            loss = self.compute_loss(model, self._prepare_inputs(inputs))
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._components:
            for key, values in self._components.items():
                logs[key] = round(sum(values) / len(values), 6)
            self._components.clear()
        super().log(logs, start_time)

    def cosmo_model(self, merge_lora: bool = True) -> CosmoForCausalLM:
        """The trained model: with LoRA, a merged copy (the training model is left as it is)."""
        model = self.accelerator.unwrap_model(self.model)
        if merge_lora and callable(getattr(model, "merge_and_unload", None)):
            model = copy.deepcopy(model).merge_and_unload()
        return model

    def save_cosmo(self, output_dir: str | os.PathLike, merge_lora: bool = True) -> CosmoForCausalLM:
        """Save the standalone model (LoRA merged, tokenizer and card written) and return it."""
        model = self.cosmo_model(merge_lora=merge_lora)
        if not isinstance(model, CosmoForCausalLM):
            raise ValueError("Only a merged model can be saved as one: call with merge_lora=True.")
        args = self.args
        training = {
            "objective": (
                f"LM cross-entropy + {model.config.contrastive_weight:g} x image-text contrastive (COSMO); "
                "interleaved batches LM only"
            ),
            "frozen": args.freeze,
            "learning rate": args.learning_rate,
            "batch size (all processes)": args.per_device_train_batch_size * max(args.world_size, 1),
            "optimizer steps": self.state.global_step,
            "seed": args.seed,
        }
        lora = adapter_details(self.accelerator.unwrap_model(self.model))["lora"]
        if lora:
            training["LoRA (merged)"] = ", ".join(f"{k}={v}" for k, v in lora.items())
        model.card_info.training = {**model.card_info.training, **training}
        if args.should_save:
            model.save_pretrained(output_dir)
        return model
