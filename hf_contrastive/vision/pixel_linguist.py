"""Pixel Linguist (Xiao et al. 2024, "Pixel Sentence Representation Learning"): sentence embeddings from text
rendered as images, trained contrastively with visually grounded positives.

A sentence is rendered as a strip of 16x16 patches ([`TextRenderer`], 64 patches by default) and read by a
ViT-MAE encoder (transformers `ViTMAEModel`, masking off: every patch is kept, in order). The head follows the
specification: per patch `Linear -> GELU -> LayerNorm -> Dropout(0.1)`, a mean over the patches that carry the
sentence (the text patches and the end-of-text patch; the blank rest and the class token are left out), a
linear projection used in training only, then `n(.)`. The objective is the symmetric InfoNCE with cosine
similarity over temperature 0.05 (`hf_contrastive.core.losses.InfoNCELoss(symmetric=True)`: the mean of the
anchor->positive and positive->anchor cross-entropies over in-batch negatives).

Positives that look like the anchor: [`character_typos`] (insert, delete or substitute one letter in some
words) and [`word_shuffle`] (all words at random, or within each clause keeping its first and last word),
both seeded. Training runs as a staged curriculum ([`CurriculumStage`], [`run_curriculum`]): each stage has
its data, learning rate and number of steps, and a stage may train several runs from the same start whose
weights are then averaged ([`average_checkpoints`]), as the paper averages four visual-alignment checkpoints.

Readings where the specification leaves a choice (not the paper's stated method):

- the pooled patches are those of the attention mask: the patches the text covers plus PIXEL's end-of-text
  patch (black by default); the encoder's self-attention uses the same mask;
- the typo rate is per word: `max(1, round(typo_rate * words))` words that hold a letter get one edit each;
  letters inserted or substituted are lower-case ASCII (`a-z`), a substituted letter always changes;
- a clause ends at a word ending in `, ; : . ! ?`; clauses of three words or fewer are left as they are;
- in evaluation mode (and in `encode`) the embedding is `n(pooled)` without the projection, the loss in
  evaluation mode is computed on those embeddings;
- ViT-MAE's fixed 2-D sine-cosine position table is laid on a square grid (as PIXEL lays its 529 = 23 x 23
  patches), so `max_patches` must be a square number (64 = 8 x 8).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import random
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from torch import nn
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    PretrainedConfig,
    PreTrainedModel,
    Trainer,
    TrainingArguments,
    ViTMAEModel,
    set_seed,
)
from transformers.utils import ModelOutput

from hf_contrastive.core.checkpoint import AtomicCheckpointMixin
from hf_contrastive.core.configuration import register_auto_classes
from hf_contrastive.core.data.checks import require_rows
from hf_contrastive.core.data.loaders import load_source
from hf_contrastive.core.engines import EngineMixin
from hf_contrastive.core.hub.mixin import HubMixin
from hf_contrastive.core.losses.infonce import InfoNCELoss
from hf_contrastive.embeddings import pool
from hf_contrastive.vision.text_render import (
    DEFAULT_FONT,
    DEFAULT_FONT_SIZE,
    END_PATCH_STYLES,
    TextRenderer,
    default_font_path,
)

logger = logging.getLogger(__name__)

__all__ = [
    "PIXEL_LINGUIST_CITATION",
    "POSITIVE_KINDS",
    "CurriculumStage",
    "PixelLinguistConfig",
    "PixelLinguistModel",
    "PixelLinguistOutput",
    "PixelLinguistTrainer",
    "PixelLinguistTrainingArguments",
    "PixelPairCollator",
    "average_checkpoints",
    "average_state_dicts",
    "character_typos",
    "load_stage_data",
    "make_positive",
    "run_curriculum",
    "visual_pairs",
    "word_shuffle",
]

PIXEL_LINGUIST_CITATION = """@article{xiao2024pixel,
  title   = {Pixel Sentence Representation Learning},
  author  = {Xiao, Chenghao and Huang, Zhuoxu and Chen, Danlu and Hudson, G Thomas and Li, Yizhi and
             Duan, Haoran and Lin, Chenghua and Fu, Jie and Han, Jungong and Al Moubayed, Noura},
  journal = {arXiv preprint arXiv:2402.08183},
  year    = {2024}
}
@inproceedings{rust2023language,
  title     = {Language Modelling with Pixels},
  author    = {Rust, Phillip and Lotz, Jonas F. and Bugliarello, Emanuele and Salesky, Elizabeth and
               de Lhoneux, Miryam and Elliott, Desmond},
  booktitle = {International Conference on Learning Representations},
  year      = {2023}
}"""

POSITIVE_KINDS = ("typo", "shuffle", "clause_shuffle")
"""Visually grounded positives: character typos, a random word shuffle, a shuffle within clauses."""

_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_CLAUSE_END = re.compile(r"[,;:.!?]$")


# -- positives --------------------------------------------------------------------------------------------


def _rng(seed: int | random.Random | None) -> random.Random:
    return seed if isinstance(seed, random.Random) else random.Random(seed)


def character_typos(text: str, seed: int | random.Random | None = None, typo_rate: float = 0.1) -> str:
    """`text` with one character edit (insert, delete or substitute a letter) in some of its words.

    `max(1, round(typo_rate * n))` of the `n` whitespace-separated words that hold a letter are drawn without
    replacement; each gets one edit at a letter position: an insertion (a letter from `a-z` before or after
    it), a deletion (only in words of two letters or more, so no word disappears) or a substitution (another
    letter from `a-z`). Words keep their order and their whitespace; a text without letters is returned as is.

    Args:
        text (`str`): the sentence.
        seed (`int | random.Random`, *optional*): seed, or a generator to draw from (for a reproducible series).
        typo_rate (`float`, *optional*, defaults to `0.1`): share of the words to edit, in `[0, 1]`.

    Returns:
        `str`: the edited text.
    """
    if not 0.0 <= typo_rate <= 1.0:
        raise ValueError(f"typo_rate must be in [0, 1], got {typo_rate!r}.")
    rng = _rng(seed)
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if any(c.isalpha() for c in w)]
    if not candidates:
        return text
    count = min(len(candidates), max(1, round(typo_rate * len(candidates))))
    for index in sorted(rng.sample(candidates, count)):
        word = words[index]
        letters = [j for j, c in enumerate(word) if c.isalpha()]
        pos = rng.choice(letters)
        ops = ["insert", "substitute"] + (["delete"] if len(letters) >= 2 else [])
        op = rng.choice(ops)
        if op == "insert":
            where = pos + rng.randint(0, 1)
            word = word[:where] + rng.choice(_LETTERS) + word[where:]
        elif op == "delete":
            word = word[:pos] + word[pos + 1 :]
        else:
            choices = [c for c in _LETTERS if c != word[pos].lower()]
            word = word[:pos] + rng.choice(choices) + word[pos + 1 :]
        words[index] = word
    return " ".join(words)


def word_shuffle(text: str, seed: int | random.Random | None = None, mode: str = "random") -> str:
    """`text` with its words reordered.

    Args:
        text (`str`): the sentence (words are separated by whitespace; punctuation stays on its word).
        seed (`int | random.Random`, *optional*): seed, or a generator to draw from.
        mode (`str`, *optional*, defaults to `"random"`): `"random"` permutes all words; `"clause"` splits the
            text into clauses (a clause ends at a word ending in `, ; : . ! ?`) and permutes the inner words of
            each clause, keeping its first and last word in place (clauses of three words or fewer stay as
            they are).

    Returns:
        `str`: the words, reordered, joined by single spaces.
    """
    if mode not in ("random", "clause"):
        raise ValueError(f"mode must be 'random' or 'clause', got {mode!r}.")
    rng = _rng(seed)
    words = text.split()
    if mode == "random":
        rng.shuffle(words)
        return " ".join(words)
    clauses: list[list[str]] = [[]]
    for word in words:
        clauses[-1].append(word)
        if _CLAUSE_END.search(word):
            clauses.append([])
    out: list[str] = []
    for clause in clauses:
        if len(clause) > 3:
            inner = clause[1:-1]
            rng.shuffle(inner)
            clause = [clause[0], *inner, clause[-1]]
        out.extend(clause)
    return " ".join(out)


def make_positive(
    text: str, kind: str, seed: int | random.Random | None = None, typo_rate: float = 0.1
) -> str:
    """A visually grounded positive of `text` (Xiao et al. 2024, stage 0).

    Args:
        text (`str`): the anchor sentence.
        kind (`str`): one of `POSITIVE_KINDS`: `"typo"` ([`character_typos`]), `"shuffle"` (random
            [`word_shuffle`]) or `"clause_shuffle"` (within clauses, first and last word kept).
        seed (`int | random.Random | None`, *optional*): the draw's seed or generator (replayable).
        typo_rate (`float`, *optional*, defaults to `0.1`): share of words edited by `"typo"`.

    Returns:
        `str`: the positive.
    """
    if kind == "typo":
        return character_typos(text, seed, typo_rate)
    if kind == "shuffle":
        return word_shuffle(text, seed, "random")
    if kind == "clause_shuffle":
        return word_shuffle(text, seed, "clause")
    raise ValueError(f"Unknown positive kind {kind!r}; expected one of {POSITIVE_KINDS}.")


def visual_pairs(
    sentences: Sequence[str],
    kinds: Sequence[str] = POSITIVE_KINDS,
    seed: int = 0,
    typo_rate: float = 0.1,
) -> Dataset:
    """(anchor, positive) pairs where each positive is a typo or shuffle variant of its anchor.

    Row `i` draws its kind uniformly from `kinds` and its edits from `random.Random(f"{seed}:{i}")`, so a row's
    positive does not depend on the other rows and the set replays exactly from `seed`.

    Args:
        sentences (`Sequence[str]`): the anchors.
        kinds (`Sequence[str]`, *optional*, defaults to `POSITIVE_KINDS`): positive kinds to draw from.
        seed (`int`, *optional*, defaults to `0`): the seed.
        typo_rate (`float`, *optional*, defaults to `0.1`): see [`character_typos`].

    Returns:
        `datasets.Dataset` with columns `anchor`, `positive` and `kind`.
    """
    kinds = list(kinds)
    if not kinds or any(k not in POSITIVE_KINDS for k in kinds):
        raise ValueError(f"kinds must be a non-empty subset of {POSITIVE_KINDS}, got {kinds}.")
    data: dict[str, list[str]] = {"anchor": [], "positive": [], "kind": []}
    for i, sentence in enumerate(sentences):
        rng = random.Random(f"{seed}:{i}")
        kind = rng.choice(kinds)
        data["anchor"].append(sentence)
        data["positive"].append(make_positive(sentence, kind, rng, typo_rate))
        data["kind"].append(kind)
    return Dataset.from_dict(data)


# -- configuration ---------------------------------------------------------------------------------------


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _finite(name: str, value: Any, low: float, high: float | None = None, open_low: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if open_low else value >= low) and (high is None or value <= high)
    if not ok:
        bound = f"> {low}" if open_low else f">= {low}"
        raise ValueError(
            f"{name} must be a finite number {bound}{f' and <= {high}' if high else ''}, got {value!r}."
        )
    return float(value)


class PixelLinguistConfig(PretrainedConfig):
    r"""Configuration of [`PixelLinguistModel`]: the renderer, the ViT-MAE encoder and the head.

    Args:
        backbone_config (`PretrainedConfig` or `dict`, *optional*): a `vit_mae` configuration. Its `image_size`
            is set to `(patch_size, patch_size * max_patches)`, `num_channels` to 1 (3 with `rgb`) and
            `mask_ratio` to 0 where the dict leaves them out; values that disagree are refused. Default: a
            ViT-MAE of PIXEL-base's size (12 layers, 768 wide).
        max_patches (`int`, *optional*, defaults to `64`): patches per rendered sentence (a square number).
        patch_size (`int`, *optional*, defaults to `16`): patch side in pixels.
        font_file (`str`, *optional*, defaults to `"DejaVuSans.ttf"`): a font of matplotlib's font folder, or a
            path to a TrueType file.
        font_size (`float`, *optional*, defaults to `13.33`): font size in pixels (8 pt at 120 DPI).
        rgb (`bool`, *optional*, defaults to `False`): render three channels instead of one.
        end_patch (`str`, *optional*, defaults to `"black"`): the end-of-text patch, `"black"` or `"blank"`.
        head_hidden_size (`int`, *optional*): width of the per-patch `Linear + GELU` (default: the encoder's).
        head_dropout (`float`, *optional*, defaults to `0.1`): dropout after the head's LayerNorm.
        projection_dim (`int`, *optional*): output width of the training-only projection (default: the head's).
        loss_temperature (`float`, *optional*, defaults to `0.05`): temperature of the symmetric InfoNCE (named so
            that transformers does not take it for a generation setting).
        initializer_range (`float`, *optional*, defaults to `0.02`): standard deviation of the head's weights.
    """

    model_type = "pixel_linguist"
    sub_configs = {"backbone_config": AutoConfig}
    keys_to_ignore_at_inference = ["embeddings", "pooled_output", "positive_embeddings"]

    def __init__(
        self,
        backbone_config: PretrainedConfig | dict[str, Any] | None = None,
        max_patches: int = 64,
        patch_size: int = 16,
        font_file: str = DEFAULT_FONT,
        font_size: float = DEFAULT_FONT_SIZE,
        rgb: bool = False,
        end_patch: str = "black",
        head_hidden_size: int | None = None,
        head_dropout: float = 0.1,
        projection_dim: int | None = None,
        loss_temperature: float = 0.05,
        initializer_range: float = 0.02,
        **kwargs: Any,
    ) -> None:
        max_patches = _positive_int("max_patches", max_patches)
        patch_size = _positive_int("patch_size", patch_size)
        if math.isqrt(max_patches) ** 2 != max_patches or max_patches < 4:
            raise ValueError(
                f"max_patches must be a square number >= 4 (ViT-MAE lays its fixed sine-cosine position table on a "
                f"square grid, as PIXEL does with 529 = 23 x 23; Pixel Linguist uses 64), got {max_patches}."
            )
        if end_patch not in END_PATCH_STYLES:
            raise ValueError(f"end_patch must be one of {END_PATCH_STYLES}, got {end_patch!r}.")
        channels = 3 if rgb else 1
        wanted = {"image_size": [patch_size, patch_size * max_patches], "patch_size": patch_size}
        wanted.update({"num_channels": channels, "mask_ratio": 0.0})
        if backbone_config is None:
            backbone_config = {"model_type": "vit_mae"}
        if isinstance(backbone_config, dict):
            if backbone_config.get("model_type", "vit_mae") != "vit_mae":
                raise ValueError(
                    f"PixelLinguistConfig needs a 'vit_mae' backbone config, got {backbone_config.get('model_type')!r}."
                )
            backbone_config = AutoConfig.for_model(**{**wanted, **backbone_config, "model_type": "vit_mae"})
        if getattr(backbone_config, "model_type", None) != "vit_mae":
            raise ValueError(
                f"PixelLinguistConfig needs a 'vit_mae' backbone config, got {getattr(backbone_config, 'model_type', None)!r}."
            )
        for key, value in wanted.items():
            have = getattr(backbone_config, key, None)
            have = list(have) if isinstance(have, (list, tuple)) else have
            if have != value:
                raise ValueError(
                    f"backbone_config.{key} is {have!r}; a {max_patches}-patch strip of {patch_size}-pixel patches "
                    f"with {channels} channel(s) needs {value!r} (mask_ratio 0: every patch is encoded)."
                )
        self.backbone_config = backbone_config
        self.max_patches, self.patch_size = max_patches, patch_size
        self.font_file, self.font_size = str(font_file), _finite("font_size", font_size, 0.0, open_low=True)
        self.rgb, self.end_patch = bool(rgb), end_patch
        self.head_hidden_size = (
            _positive_int("head_hidden_size", head_hidden_size)
            if head_hidden_size is not None
            else int(backbone_config.hidden_size)
        )
        self.head_dropout = _finite("head_dropout", head_dropout, 0.0, 1.0)
        if self.head_dropout >= 1.0:
            raise ValueError(f"head_dropout must be < 1, got {head_dropout!r}.")
        self.projection_dim = (
            _positive_int("projection_dim", projection_dim)
            if projection_dim is not None
            else self.head_hidden_size
        )
        self.loss_temperature = _finite("loss_temperature", loss_temperature, 0.0, open_low=True)
        self.initializer_range = float(initializer_range)
        super().__init__(**kwargs)

    def renderer(self) -> TextRenderer:
        """The [`TextRenderer`] these settings describe (`font_file` without a folder: a font of matplotlib's)."""
        has_folder = os.path.dirname(self.font_file) != ""
        return TextRenderer(
            max_patches=self.max_patches,
            patch_size=self.patch_size,
            font_path=self.font_file if has_folder else default_font_path(self.font_file),
            font_size=self.font_size,
            rgb=self.rgb,
            end_patch=self.end_patch,
        )


# -- the model -------------------------------------------------------------------------------------------


@dataclass
class PixelLinguistOutput(ModelOutput):
    """Output of [`PixelLinguistModel`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): the symmetric InfoNCE, when positives are given.
        embeddings (`torch.FloatTensor` of shape `(batch_size, dim)`): `n(projection(pooled))` in training mode,
            `n(pooled)` in evaluation mode.
        pooled_output (`torch.FloatTensor` of shape `(batch_size, head_hidden_size)`): the masked mean of the
            head's patch states.
        positive_embeddings (`torch.FloatTensor` of shape `(batch_size, dim)`, *optional*): the positives'.
        patch_states (`torch.FloatTensor` of shape `(batch_size, max_patches, head_hidden_size)`, *optional*): the
            head's per-patch states (with `output_patch_states=True`).
    """

    loss: torch.FloatTensor | None = None
    embeddings: torch.FloatTensor | None = None
    pooled_output: torch.FloatTensor | None = None
    positive_embeddings: torch.FloatTensor | None = None
    patch_states: torch.FloatTensor | None = None


class PixelLinguistPreTrainedModel(PreTrainedModel):
    """Base of [`PixelLinguistModel`]: its config class, weight initialisation and input name."""

    config_class = PixelLinguistConfig
    base_model_prefix = "backbone"
    main_input_name = "pixel_values"
    accepts_loss_kwargs = False
    supports_gradient_checkpointing = True
    _supports_sdpa = True


class PixelLinguistModel(HubMixin, PixelLinguistPreTrainedModel):
    r"""Pixel Linguist sentence encoder (Xiao et al. 2024): rendered text -> ViT-MAE -> patch head -> masked mean.

    `forward` takes rendered strips (`pixel_values` `[B, C, 16, 16 * max_patches]`, `attention_mask`
    `[B, max_patches]`, as [`TextRenderer`] makes them); with `positive_pixel_values` and
    `positive_attention_mask` it also returns the symmetric InfoNCE of anchors against positives (one encoder
    pass over both). `encode(texts)` renders and embeds plain strings.

    Example::

        >>> model = PixelLinguistModel(PixelLinguistConfig(backbone_config={"hidden_size": 256,
        ...     "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024}))
        >>> model.encode(["A sentence.", "Another sentence."]).shape
        torch.Size([2, 256])
    """

    card_template = "pixel_sentence_encoder.md"
    card_pipeline_tag = "sentence-similarity"
    card_tags = ("sentence-similarity", "contrastive-learning", "pixel-linguist", "pixel")
    card_citations = (PIXEL_LINGUIST_CITATION,)
    gather: bool | None = None

    def __init__(self, config: PixelLinguistConfig, backbone: PreTrainedModel | None = None) -> None:
        super().__init__(config)
        if backbone is None:
            backbone = _build_backbone(config.backbone_config)
        self.backbone = backbone
        if getattr(self.backbone.config, "_attn_implementation", None) is None:
            self.backbone.config._attn_implementation = "sdpa"
        width = int(config.backbone_config.hidden_size)
        self.head = nn.Sequential(
            nn.Linear(width, config.head_hidden_size),
            nn.GELU(),
            nn.LayerNorm(config.head_hidden_size),
            nn.Dropout(config.head_dropout),
        )
        self.projection = nn.Linear(config.head_hidden_size, config.projection_dim)
        self.post_init()

    @property
    def renderer(self) -> TextRenderer:
        """The model's [`TextRenderer`] (built from the config on first use)."""
        renderer = self.__dict__.get("_renderer")
        if renderer is None:
            renderer = self.config.renderer()
            self.__dict__["_renderer"] = renderer
        return renderer

    def _check_inputs(
        self, pixel_values: Any, attention_mask: Any, name: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        owner = type(self).__name__
        c = self.config
        shape = (3 if c.rgb else 1, c.patch_size, c.patch_size * c.max_patches)
        if (
            not isinstance(pixel_values, torch.Tensor)
            or pixel_values.dim() != 4
            or tuple(pixel_values.shape[1:]) != shape
        ):
            got = (
                tuple(pixel_values.shape)
                if isinstance(pixel_values, torch.Tensor)
                else type(pixel_values).__name__
            )
            raise ValueError(
                f"{owner}: {name} must have shape [B, {shape[0]}, {shape[1]}, {shape[2]}], got {got}."
            )
        batch = pixel_values.shape[0]
        if attention_mask is None:
            attention_mask = torch.ones(batch, c.max_patches, dtype=torch.long, device=pixel_values.device)
        if not isinstance(attention_mask, torch.Tensor) or tuple(attention_mask.shape) != (
            batch,
            c.max_patches,
        ):
            got = tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else attention_mask
            raise ValueError(
                f"{owner}: the attention mask of {name} must have shape {(batch, c.max_patches)}, got {got}."
            )
        empty = (attention_mask.sum(dim=1) == 0).nonzero().flatten().tolist()
        if empty:
            raise ValueError(
                f"{owner}: rows {empty[:10]} of {name} have an all-zero attention mask (nothing to pool)."
            )
        return pixel_values, attention_mask.to(pixel_values.device)

    def embed(
        self, pixel_values: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(patch_states [B, N, H], pooled [B, H], embeddings [B, D])` of rendered strips (checked inputs)."""
        batch, length = attention_mask.shape
        order = torch.arange(length, device=pixel_values.device, dtype=torch.float32).expand(batch, -1)
        # the class token always attends; the blank patches after the end-of-text patch are masked out
        full_mask = torch.cat([attention_mask.new_ones(batch, 1), attention_mask], dim=1)
        out = self.backbone(pixel_values=pixel_values, noise=order, attention_mask=full_mask)
        states = self.head(out.last_hidden_state[:, 1:])
        pooled = pool("mean", states, attention_mask)
        features = self.projection(pooled) if self.training else pooled
        return states, pooled, F.normalize(features, dim=-1)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        positive_pixel_values: torch.Tensor | None = None,
        positive_attention_mask: torch.Tensor | None = None,
        output_patch_states: bool = False,
        return_loss: bool = True,
        return_dict: bool | None = None,
    ) -> PixelLinguistOutput:
        r"""Embed rendered sentences; with positives, score them with the symmetric InfoNCE.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, channels, 16, 16 * max_patches)`): the strips.
            attention_mask (`torch.LongTensor` of shape `(batch_size, max_patches)`, *optional*): 1 on the patches
                to encode and pool (default: all).
            positive_pixel_values (`torch.FloatTensor`, *optional*): the positives' strips (same shape).
            positive_attention_mask (`torch.LongTensor`, *optional*): their masks.
            output_patch_states (`bool`, *optional*, defaults to `False`): also return the head's patch states.
            return_loss (`bool`, *optional*, defaults to `True`): tells `Trainer` that the model returns its loss
                without labels (it does whenever positives are given).
            return_dict (`bool`, *optional*): accepted for `Trainer`; the output is always a [`PixelLinguistOutput`].
        """
        if pixel_values is None:
            raise ValueError(f"{type(self).__name__}.forward needs pixel_values.")
        pixel_values, attention_mask = self._check_inputs(pixel_values, attention_mask, "pixel_values")
        batch = pixel_values.shape[0]
        if positive_pixel_values is None:
            if positive_attention_mask is not None:
                raise ValueError(
                    f"{type(self).__name__}: positive_attention_mask was given without positive_pixel_values."
                )
            states, pooled, embeddings = self.embed(pixel_values, attention_mask)
            return PixelLinguistOutput(
                embeddings=embeddings,
                pooled_output=pooled,
                patch_states=states if output_patch_states else None,
            )
        positive_pixel_values, positive_attention_mask = self._check_inputs(
            positive_pixel_values, positive_attention_mask, "positive_pixel_values"
        )
        if positive_pixel_values.shape[0] != batch:
            raise ValueError(
                f"{type(self).__name__}: {batch} anchors but {positive_pixel_values.shape[0]} positives."
            )
        states, pooled, embeddings = self.embed(
            torch.cat([pixel_values, positive_pixel_values]),
            torch.cat([attention_mask, positive_attention_mask]),
        )
        anchors, positives = embeddings[:batch], embeddings[batch:]
        loss = self.loss_fn()(anchors, positives)
        self.__dict__["_last_components"] = loss.components
        return PixelLinguistOutput(
            loss=loss.loss,
            embeddings=anchors,
            pooled_output=pooled[:batch],
            positive_embeddings=positives,
            patch_states=states[:batch] if output_patch_states else None,
        )

    def loss_fn(self) -> InfoNCELoss:
        """The symmetric InfoNCE of the config (cosine / temperature; in-batch negatives, gathered when distributed)."""
        return InfoNCELoss(
            temperature=self.config.loss_temperature, symmetric=True, gather_across_devices=self.gather
        )

    @property
    def last_loss_components(self) -> dict[str, torch.Tensor]:
        """The named loss terms of the latest `forward` with positives (for logging)."""
        return dict(self.__dict__.get("_last_components", {}))

    @torch.no_grad()
    def encode(
        self,
        texts: str | Sequence[str],
        batch_size: int = 32,
        normalize: bool = True,
        show_progress_bar: bool = False,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Sentence embeddings `[N, head_hidden_size]` (float32, on CPU) of plain texts, in evaluation mode.

        Args:
            texts (`str | Sequence[str]`): the sentences (rendered with the model's [`TextRenderer`]; longer ones are
                truncated with a warning).
            batch_size (`int`, *optional*, defaults to `32`): sentences per forward.
            normalize (`bool`, *optional*, defaults to `True`): L2-normalise (else the pooled output as it is).
            show_progress_bar (`bool`, *optional*, defaults to `False`): show a progress bar.
            kwargs (`Any`): accepted for sentence-transformers-style callers and ignored.
        """
        if isinstance(texts, str):
            texts = [texts]
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        was_training = self.training
        self.eval()
        parts = []
        starts = range(0, len(texts), batch_size)
        if show_progress_bar:
            starts = tqdm(starts, desc="encode")
        try:
            for start in starts:
                rendered = self.renderer(list(texts[start : start + batch_size]))
                pixels = rendered.pixel_values.to(self.device, self.dtype)
                out = self(pixel_values=pixels, attention_mask=rendered.attention_mask.to(self.device))
                vectors = out.embeddings if normalize else out.pooled_output
                parts.append(vectors.float().cpu())
        finally:
            self.train(was_training)
        return torch.cat(parts) if parts else torch.empty(0, self.config.head_hidden_size)

    def card_details(self) -> dict[str, Any]:
        """Settings for `model_cards/pixel_sentence_encoder.md`."""
        c, b = self.config, self.config.backbone_config
        return {
            "title": "Pixel Linguist sentence encoder",
            "description": (
                "A sentence encoder that reads text rendered as an image (a strip of 16x16 patches) with a ViT-MAE, "
                "trained with Pixel Linguist's visually grounded contrastive objective, made with hf-contrastive."
            ),
            "backbone_type": "vit_mae",
            "layers": b.num_hidden_layers,
            "hidden_size": b.hidden_size,
            "max_patches": c.max_patches,
            "patch_size": c.patch_size,
            "width": c.patch_size * c.max_patches,
            "font_file": c.font_file,
            "font_size": round(c.font_size, 2),
            "channels": 3 if c.rgb else 1,
            "end_patch": c.end_patch,
            "head_hidden_size": c.head_hidden_size,
            "head_dropout": c.head_dropout,
            "projection_dim": c.projection_dim,
            "temperature": c.loss_temperature,
        }


def _build_backbone(config: PretrainedConfig) -> PreTrainedModel:
    """A randomly initialised ViT-MAE encoder with its fixed sine-cosine position table.

    transformers 5 initialises the patch projection before the embeddings module and then skips
    `ViTMAEEmbeddings.initialize_weights` (it returns early once the projection is marked initialised), which leaves
    the position table and the class token at zero; the embeddings are initialised again here, as ViT-MAE intends.
    """
    backbone = ViTMAEModel(config)
    embeddings = backbone.embeddings
    embeddings.patch_embeddings.projection._is_hf_initialized = False
    with torch.no_grad():
        embeddings.initialize_weights()
    return backbone


# -- data ------------------------------------------------------------------------------------------------


class PixelPairCollator:
    r"""Rows with an anchor and a positive text -> rendered strips for [`PixelLinguistModel`].

    Args:
        renderer (`TextRenderer`): the model's renderer (`model.renderer`).
        anchor_column (`str`, *optional*, defaults to `"anchor"`): column of anchors.
        positive_column (`str`, *optional*, defaults to `"positive"`): column of positives.
    """

    def __init__(
        self, renderer: TextRenderer, anchor_column: str = "anchor", positive_column: str = "positive"
    ) -> None:
        if not isinstance(renderer, TextRenderer):
            raise TypeError(f"PixelPairCollator needs a TextRenderer, got {type(renderer).__name__}.")
        self.renderer, self.anchor_column, self.positive_column = renderer, anchor_column, positive_column

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("PixelPairCollator got an empty batch.")
        texts: dict[str, list[str]] = {self.anchor_column: [], self.positive_column: []}
        for i, row in enumerate(rows):
            for column in texts:
                if column not in row:
                    raise ValueError(f"Row {i} has no {column!r} column (columns: {sorted(row)}).")
                if not isinstance(row[column], str):
                    raise TypeError(
                        f"Row {i}: {column!r} must be a string, got {type(row[column]).__name__}."
                    )
                texts[column].append(row[column])
        anchors = self.renderer(texts[self.anchor_column])
        positives = self.renderer(texts[self.positive_column])
        return {
            "pixel_values": anchors.pixel_values,
            "attention_mask": anchors.attention_mask,
            "positive_pixel_values": positives.pixel_values,
            "positive_attention_mask": positives.attention_mask,
        }


# -- training --------------------------------------------------------------------------------------------


@dataclass
class PixelLinguistTrainingArguments(TrainingArguments):
    r"""Training arguments of [`PixelLinguistTrainer`]: `TrainingArguments` with the defaults text pairs need.

    Args:
        remove_unused_columns (`bool`, *optional*, defaults to `False`): keep the text columns for the collator.
        report_to (`Any`, *optional*, defaults to `"none"`): loggers.
    """

    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the text columns."})
    report_to: Any = field(default="none", metadata={"help": "Loggers."})


class PixelLinguistTrainer(AtomicCheckpointMixin, EngineMixin, Trainer):
    r"""Trains a [`PixelLinguistModel`] on (anchor, positive) text pairs with its symmetric InfoNCE.

    Batches come from a [`PixelPairCollator`] over the model's renderer unless `data_collator` is given. The loss's
    components (`infonce`, `infonce_sym`, `acc`) are averaged into each log.

    Args:
        model (`PixelLinguistModel`): the model.
        args (`PixelLinguistTrainingArguments`, *optional*): training arguments.
        train_dataset (`Any`, *optional*): rows with `anchor` and `positive` texts.
        eval_dataset (`Any`, *optional*): the same, for the evaluation loss.
        data_collator (`Any`, *optional*): defaults to `PixelPairCollator(model.renderer)`.
    """

    def __init__(
        self,
        model: PixelLinguistModel | None = None,
        args: TrainingArguments | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        data_collator: Any = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(model, PixelLinguistModel):
            raise TypeError(f"PixelLinguistTrainer needs a PixelLinguistModel, got {type(model).__name__}.")
        if kwargs.pop("peft_config", None) is not None:
            raise ValueError(
                "PixelLinguistTrainer trains the encoder in full; LoRA (peft_config) is not supported."
            )
        args = (
            args if args is not None else PixelLinguistTrainingArguments(output_dir="pixel-linguist-output")
        )
        require_rows(train_dataset, name="train_dataset", owner=type(self).__name__)
        require_rows(eval_dataset, name="eval_dataset", owner=type(self).__name__)
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            data_collator=data_collator or PixelPairCollator(model.renderer),
            **kwargs,
        )
        self._components: dict[str, list[float]] = defaultdict(list)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if inputs.get("positive_pixel_values") is None:
            raise ValueError("PixelLinguistTrainer needs positives in every batch (positive_pixel_values).")
        outputs = model(**inputs)
        if model.training:
            for key, value in self.accelerator.unwrap_model(model).last_loss_components.items():
                self._components[key].append(float(value))
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._components:
            for key, values in self._components.items():
                logs[key] = round(sum(values) / len(values), 6)
            self._components.clear()
        super().log(logs, start_time)


# -- checkpoint weight averaging ------------------------------------------------------------------------------


def _comparable(config: PretrainedConfig) -> dict[str, Any]:
    d = config.to_dict()
    drop = ("_name_or_path", "dtype", "torch_dtype", "transformers_version", "architectures")
    d = {k: v for k, v in d.items() if k not in drop}
    if isinstance(d.get("backbone_config"), dict):
        d["backbone_config"] = {k: v for k, v in d["backbone_config"].items() if k not in drop}
    return d


def average_state_dicts(
    states: Sequence[Mapping[str, torch.Tensor]],
    weights: Sequence[float] | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, torch.Tensor]:
    """`sum_k w_k * state_k / sum_k w_k` for every floating-point tensor (accumulated in float64, cast back to its
    dtype, on CPU); other tensors must be equal in every state dict and are copied.

    Args:
        states (`Sequence[Mapping[str, torch.Tensor]]`): state dicts with the same names, shapes and dtypes.
        weights (`Sequence[float]`, *optional*): one non-negative weight each (default: equal weights).
        names (`Sequence[str]`, *optional*): what each state dict is, for messages.

    Raises:
        `ValueError`: fewer than two state dicts, different names, shapes or dtypes, bad weights, or a non-float
            tensor that differs.
    """
    if len(states) < 2:
        raise ValueError(f"Averaging needs at least two checkpoints, got {len(states)}.")
    names = list(names) if names is not None else [f"checkpoint {i}" for i in range(len(states))]
    weights = [1.0] * len(states) if weights is None else [float(w) for w in weights]
    if (
        len(weights) != len(states)
        or any(not math.isfinite(w) or w < 0 for w in weights)
        or sum(weights) <= 0
    ):
        raise ValueError(
            f"weights must be {len(states)} finite numbers >= 0 with a positive sum, got {list(weights)}."
        )
    total = sum(weights)
    for name, state in zip(names[1:], states[1:]):
        if set(state) != set(states[0]):
            missing = sorted(set(states[0]) ^ set(state))
            raise ValueError(f"{name} and {names[0]} hold different weights: {missing[:10]}.")
        for key, tensor in state.items():
            first = states[0][key]
            if tensor.shape != first.shape or tensor.dtype != first.dtype:
                raise ValueError(
                    f"{name}: {key} is {tuple(tensor.shape)} {tensor.dtype}, {names[0]} has {tuple(first.shape)} "
                    f"{first.dtype}."
                )
    averaged = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            acc = torch.zeros(first.shape, dtype=torch.float64)
            for w, state in zip(weights, states):
                acc += state[key].detach().to("cpu", torch.float64) * (w / total)
            averaged[key] = acc.to(first.dtype)
        else:
            if any(not torch.equal(state[key].cpu(), first.cpu()) for state in states[1:]):
                raise ValueError(
                    f"{key} is a non-float tensor that differs between checkpoints; it cannot be averaged."
                )
            averaged[key] = first.detach().cpu().clone()
    return averaged


def average_checkpoints(
    checkpoints: Sequence[str | os.PathLike | PixelLinguistModel],
    output_dir: str | os.PathLike | None = None,
    weights: Sequence[float] | None = None,
) -> PixelLinguistModel:
    """Average the weights of saved checkpoints of one architecture (Pixel Linguist's model averaging).

    Every floating-point tensor of the state dicts is averaged in float64, `sum_k w_k * theta_k` with weights
    that sum to 1 (default `1/K` each), and cast back to its dtype; other tensors (integer buffers) must be
    equal in every checkpoint. The configs must describe the same model (everything but the load path and the
    dtype), the state dicts the same names and shapes.

    Args:
        checkpoints (`Sequence[str | os.PathLike | PixelLinguistModel]`): saved model folders (or Trainer
            `checkpoint-*` folders) or models, at least two.
        output_dir (`str | os.PathLike`, *optional*): save the average here (atomically: a temporary folder
            replaces the target once complete, with its model card).
        weights (`Sequence[float]`, *optional*): one non-negative weight per checkpoint (normalised to sum 1).

    Returns:
        `PixelLinguistModel`: the averaged model (the first checkpoint's object when models are given).

    Raises:
        `ValueError`: fewer than two checkpoints, different configs, names, shapes or dtypes, bad weights.
    """
    if len(checkpoints) < 2:
        raise ValueError(f"average_checkpoints needs at least two checkpoints, got {len(checkpoints)}.")
    models = []
    for item in checkpoints:
        if isinstance(item, PixelLinguistModel):
            models.append(item)
        elif isinstance(item, (str, os.PathLike)):
            if not Path(item, "config.json").is_file():
                raise ValueError(f"{os.fspath(item)} is not a saved model folder (no config.json).")
            models.append(PixelLinguistModel.from_pretrained(item))
        else:
            raise TypeError(
                f"checkpoints are folders or PixelLinguistModel objects, got {type(item).__name__}."
            )
    names = [
        os.fspath(c) if not isinstance(c, PixelLinguistModel) else f"model {i}"
        for i, c in enumerate(checkpoints)
    ]
    reference = _comparable(models[0].config)
    for name, model in zip(names[1:], models[1:]):
        theirs = _comparable(model.config)
        if theirs != reference:
            diff = sorted(k for k in set(reference) | set(theirs) if reference.get(k) != theirs.get(k))
            raise ValueError(f"{name} has another architecture than {names[0]}: config keys {diff} differ.")
    averaged = average_state_dicts([m.state_dict() for m in models], weights, names)
    result = models[0]
    result.load_state_dict(averaged, strict=True)
    result.card_info.training = {
        **(result.card_info.training or {}),
        "weight averaging": f"{len(checkpoints)} checkpoints"
        + (f", weights {[float(w) for w in weights]}" if weights is not None else ", equal weights"),
    }
    if output_dir is not None:
        result.save_pretrained(output_dir)
    return result


# -- the staged curriculum ------------------------------------------------------------------------------------


@dataclass
class CurriculumStage:
    r"""One stage of a Pixel Linguist curriculum.

    Args:
        name (`str`): the stage's name (its folder under the run's output folder).
        data (`Mapping[str, Any] | Dataset`): a `datasets.Dataset` with `anchor` / `positive` columns, or a source
            for [`load_stage_data`]: `{type: text, path: ..., max_rows: ..., positives: [typo, shuffle,
            clause_shuffle], typo_rate: 0.1}` (sentences paired with visual positives), `{type: snli, split: dev}`
            (premise / entailment pairs, an NLI stage), or `{type: files, format: json, path: ...}` (pairs).
        learning_rate (`float`): the stage's peak learning rate.
        max_steps (`int`): optimisation steps of each run of the stage.
        runs (`int`, *optional*, defaults to `1`): runs trained from the stage's starting weights with seeds
            `seed, seed + 1, ...`; with more than one, their final weights are averaged ([`average_checkpoints`])
            and the next stage starts from the average.
        per_device_train_batch_size (`int`, *optional*): the stage's batch size (default: the base arguments').
    """

    name: str
    data: Any
    learning_rate: float
    max_steps: int
    runs: int = 1
    per_device_train_batch_size: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            raise ValueError(f"A stage name is letters, digits, '_', '.', '-', got {self.name!r}.")
        _finite(f"stage {self.name!r} learning_rate", self.learning_rate, 0.0, open_low=True)
        _positive_int(f"stage {self.name!r} max_steps", self.max_steps)
        _positive_int(f"stage {self.name!r} runs", self.runs)
        if self.per_device_train_batch_size is not None:
            _positive_int(
                f"stage {self.name!r} per_device_train_batch_size", self.per_device_train_batch_size
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> CurriculumStage:
        """A stage from a recipe's mapping (unknown keys are refused)."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown stage key(s) {unknown}; accepted: {sorted(known)}.")
        return cls(**dict(values))


def load_stage_data(source: Any, seed: int = 0) -> Dataset:
    """The (anchor, positive) pairs of a stage (see [`CurriculumStage`] for the source forms).

    Args:
        source (`Any`): a `datasets.Dataset` or a source mapping.
        seed (`int`, *optional*, defaults to `0`): seed of the visual positives of a `text` source.
    """
    if isinstance(source, Dataset):
        data = source
    elif isinstance(source, Mapping):
        spec = dict(source)
        kinds = spec.pop("positives", None)
        typo_rate = float(spec.pop("typo_rate", 0.1))
        if spec.get("type") == "text":
            sentences = load_source(spec)["text"]
            return visual_pairs(sentences, kinds or POSITIVE_KINDS, seed=seed, typo_rate=typo_rate)
        if kinds is not None:
            raise ValueError("positives apply to a 'text' source (sentences); pair sources bring their own.")
        data = load_source(spec)
    else:
        raise TypeError(
            f"A stage's data is a datasets.Dataset or a source mapping, got {type(source).__name__}."
        )
    missing = [c for c in ("anchor", "positive") if c not in data.column_names]
    if missing:
        raise ValueError(
            f"A stage's pairs need 'anchor' and 'positive' columns; missing {missing} ({data.column_names})."
        )
    return data


def run_curriculum(
    model: PixelLinguistModel,
    stages: Sequence[CurriculumStage | Mapping[str, Any]],
    args: PixelLinguistTrainingArguments,
    **trainer_kwargs: Any,
) -> list[dict[str, Any]]:
    """Train `model` through the stages in order (Pixel Linguist's staged curriculum).

    Each run of stage `i` trains from the weights the previous stage ended with, with the stage's learning rate,
    steps and batch size, writes its `Trainer` output under `args.output_dir/<i>-<name>/run-<r>` and saves its
    final model there (`final/`). A stage with several runs averages their final weights into
    `args.output_dir/<i>-<name>/averaged`. `model` ends holding the last stage's weights.

    Args:
        model (`PixelLinguistModel`): the model, trained in place.
        stages (`Sequence[CurriculumStage | Mapping]`): the stages, in order.
        args (`PixelLinguistTrainingArguments`): the base arguments (output folder, seed, schedule, batch size...).
        trainer_kwargs (`Any`): passed to every [`PixelLinguistTrainer`] (`eval_dataset`, `callbacks`...).

    Returns:
        `list[dict]`: per stage, `name`, `rows`, `runs` (each with `seed`, `train_loss`, `folder`) and `folder`
        (the weights the stage ended with).
    """
    stages = [s if isinstance(s, CurriculumStage) else CurriculumStage.from_dict(s) for s in stages]
    if not stages:
        raise ValueError("run_curriculum needs at least one stage.")
    if len({s.name for s in stages}) != len(stages):
        raise ValueError(f"Stage names must differ, got {[s.name for s in stages]}.")
    root = Path(args.output_dir)
    results = []
    for index, stage in enumerate(stages):
        data = load_stage_data(stage.data, seed=args.seed + index)
        start = copy.deepcopy(model.state_dict())
        stage_dir = root / f"{index}-{stage.name}"
        runs, finals, states = [], [], []
        for r in range(stage.runs):
            model.load_state_dict(start)
            seed = args.seed + r
            set_seed(seed)
            run_args = replace(
                args,
                output_dir=str(stage_dir / f"run-{r}"),
                learning_rate=stage.learning_rate,
                max_steps=stage.max_steps,
                seed=seed,
                per_device_train_batch_size=stage.per_device_train_batch_size
                or args.per_device_train_batch_size,
            )
            trainer = PixelLinguistTrainer(model=model, args=run_args, train_dataset=data, **trainer_kwargs)
            out = trainer.train()
            final = stage_dir / f"run-{r}" / "final"
            model.card_info.training = {
                "stage": stage.name,
                "learning rate": stage.learning_rate,
                "steps": stage.max_steps,
            }
            if run_args.should_save:
                model.save_pretrained(final)
            runs.append({"seed": seed, "train_loss": float(out.training_loss), "folder": str(final)})
            finals.append(final)
            if stage.runs > 1:
                states.append({k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
            logger.info("Curriculum stage %s run %d: train loss %.4f.", stage.name, r, out.training_loss)
        folder = finals[-1]
        if stage.runs > 1:
            # averaged in memory, so that processes which do not write (distributed runs) need no files
            folder = stage_dir / "averaged"
            model.load_state_dict(average_state_dicts(states, names=[str(f) for f in finals]))
            model.card_info.training = {"stage": stage.name, "weight averaging": f"{stage.runs} runs"}
            if args.should_save:
                model.save_pretrained(folder)
        results.append({"name": stage.name, "rows": len(data), "runs": runs, "folder": str(folder)})
    return results


register_auto_classes(PixelLinguistConfig, PixelLinguistModel)
