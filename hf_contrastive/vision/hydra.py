"""Hydra / SimLAP (Wu et al. 2024, "Rethinking Positive Pairs in Contrastive Learning"): contrastive learning
from arbitrary class pairs through a feature filter conditioned on the pair.

Every anchor `i` (class `y1`) is given a target class `y2` (`pair_type`: the labels of a randomly permuted
batch, its own class, or another class). A gate `g = sigmoid(MLP((E[y1] + E[y2]) / 2))`, from a learned table
`E` of label embeddings, switches dimensions of the projected features on or off, so that images of two
different classes can be made similar in a subspace chosen for that pair. The positives of anchor `i` are the
rows of class `y2`, its negatives the rows of any class other than `y1` and `y2`:

    L_i = 1/|P_i| sum_{k in P_i} [log(exp(l_ik) + sum_{n in N_i} exp(l_in)) - l_ik],

with the logits `l_i.` of each row centred on their mean. Two logit variants of the paper's code are offered
(`HydraConfig.logit_variant`):

- `"gated_cosine"` (A): `l_ik = cos(g_i * n(z_i), g_i * n(z_k)) / temperature`, temperature 0.1;
- `"gated_scaled"` (B): `l_ik = ((n(z_i) * g_i * g_i) . n(z_k)) * exp(s)`, `s` learnable, initialised to log 10.

An online linear probe trained by cross-entropy on the detached backbone features reports how linearly
separable the classes are while training runs, without shaping the backbone.

What this module settles where the specification leaves a choice (a reading, not the paper's stated method):

- the anchor itself is never one of its positives (with `pair_type="identical"` it would be the easiest
  one); it is never a negative either, since its class is `y1`;
- anchors without any positive in the (gathered) batch are left out of the mean; the share of anchors kept is
  reported as the `anchors_with_positives` component, and a batch where no anchor has a positive gives a zero
  loss (with its graph) and a logged warning;
- row centring subtracts the mean over every gathered column (the anchor's own included); the loss is
  unchanged by any such shift, centring only keeps the exponentials in range;
- the projector is `Linear(H, 2048) -> ReLU -> Linear(2048, 256) -> LayerNorm(256)` (the specification gives
  the sizes and the final LayerNorm, not the activation);
- the gate MLP follows the specification's order: `ReLU, BatchNorm, Linear(512, 1024), ReLU, BatchNorm,
  Linear(1024, 256)`, then a sigmoid; its BatchNorm layers use per-process batch statistics under DDP, as
  every BatchNorm does without `SyncBatchNorm`;
- `"gated_scaled"`'s learnable scale is not clamped.

Cross-device training: [`HydraLoss`] computes a local loss, this process's anchors against the projected
features and labels of every process (gathered with gradient by `gather_with_grad`), normalised by the global
number of anchors with positives, so that DDP's gradient average equals one process on the whole batch.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from datasets import ClassLabel, Dataset, Features, Value
from PIL import Image
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel, Trainer, TrainingArguments
from transformers import initialization as init
from transformers.utils import ModelOutput

from hf_contrastive.core import distributed
from hf_contrastive.core.checkpoint import AtomicCheckpointMixin
from hf_contrastive.core.configuration import backbone_hidden_size, register_auto_classes
from hf_contrastive.core.data.checks import require_rows
from hf_contrastive.core.engines import EngineMixin
from hf_contrastive.core.hub.card import ModelCardInfo
from hf_contrastive.core.hub.mixin import HubMixin
from hf_contrastive.core.losses.base import ContrastiveLoss, LossOutput, check_2d, upcast
from hf_contrastive.vision import augment
from hf_contrastive.vision.data import load_coco_captions
from hf_contrastive.vision.losses import local_targets
from hf_contrastive.vision.modeling import load_image

logger = logging.getLogger(__name__)

__all__ = [
    "HYDRA_CITATION",
    "IMAGE_EXTENSIONS",
    "KEYWORD_GROUPS",
    "LOGIT_VARIANTS",
    "PAIR_TYPES",
    "POOLING_MODES",
    "HydraConfig",
    "HydraGate",
    "HydraImageCollator",
    "HydraLoss",
    "HydraModel",
    "HydraOutput",
    "HydraTrainer",
    "HydraTrainingArguments",
    "augmented_transform",
    "coco_keyword_labels",
    "gated_view",
    "hydra_logits",
    "image_to_pixels",
    "keyword_label",
    "load_image_folder",
    "load_labelled_images",
    "majority_rate",
    "probe_metrics",
    "sample_target_labels",
    "vision_feature_size",
]

HYDRA_CITATION = """@article{wu2024rethinking,
  title   = {Rethinking Positive Pairs in Contrastive Learning},
  author  = {Wu, Jiantao and Atito, Sara and Mo, Shentong and Kittler, Josef and Awais, Muhammad},
  journal = {arXiv preprint arXiv:2410.18200},
  year    = {2024}
}"""

PAIR_TYPES = ("arbitrary", "identical", "distinct")
"""How an anchor's target class is drawn: the labels of a randomly permuted batch, its own class, another class."""

LOGIT_VARIANTS = ("gated_cosine", "gated_scaled")
"""The two logit forms of the paper's code (see the module docstring)."""

POOLING_MODES = ("auto", "pooler", "mean", "cls")
"""How backbone outputs become one feature vector per image (see [`HydraConfig`])."""

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
"""File endings [`load_image_folder`] reads as images."""

KEYWORD_GROUPS: dict[str, tuple[str, ...]] = {
    "animal": (
        "animal", "animals", "dog", "dogs", "puppy", "cat", "cats", "kitten", "elephant", "elephants",
        "giraffe", "giraffes", "zebra", "zebras", "horse", "horses", "cow", "cows", "cattle", "sheep",
        "bird", "birds", "bear", "bears",
    ),
    "vehicle": (
        "vehicle", "vehicles", "plane", "planes", "airplane", "airplanes", "jet", "jets", "jetliner",
        "bus", "buses", "train", "trains", "car", "cars", "truck", "trucks", "motorcycle", "motorcycles",
        "bike", "bikes", "bicycle", "bicycles", "boat", "boats",
    ),
    "food": (
        "food", "foods", "pizza", "pizzas", "sandwich", "sandwiches", "cake", "cakes", "banana", "bananas",
        "donut", "donuts", "doughnut", "doughnuts", "fruit", "fruits", "vegetable", "vegetables", "broccoli",
        "meal", "plate", "dish",
    ),
    "furniture": (
        "kitchen", "kitchens", "bathroom", "bathrooms", "bedroom", "room", "couch", "sofa", "bed", "beds",
        "table", "toilet", "sink", "refrigerator", "desk", "chair", "chairs",
    ),
    "person": (
        "person", "people", "man", "men", "woman", "women", "boy", "boys", "girl", "girls", "child",
        "children", "kid", "kids", "lady", "guy", "player", "players", "skier", "skiers", "surfer",
    ),
}  # fmt: skip
"""Coarse classes for caption-only image sets (COCO captions carry no class labels): an image takes the group
that most of its captions mention (whole words, lower case), ties going to the earlier group; `person` comes
last because people appear in most scenes. A reading made for smoke runs, not a COCO category mapping."""


# -- configuration ---------------------------------------------------------------------------------------


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def vision_feature_size(backbone_config: Any, pooling: str = "auto") -> int:
    """Width of the pooled features of a vision backbone, read from its config.

    Args:
        backbone_config (`PretrainedConfig`): the backbone's configuration.
        pooling (`str`, *optional*, defaults to `"auto"`): the head's pooling (see [`HydraConfig`]).

    Returns:
        `int`: the last stage's width for convolutional families (`hidden_sizes[-1]`: ResNet, ConvNeXt), the
        pooler's output size where the config names one (ViT), else the token width (`hidden_size`).
    """
    sizes = getattr(backbone_config, "hidden_sizes", None)
    if isinstance(sizes, (list, tuple)) and sizes and isinstance(sizes[-1], int):
        return int(sizes[-1])
    pooler_size = getattr(backbone_config, "pooler_output_size", None)
    if pooling in ("auto", "pooler") and isinstance(pooler_size, int) and not isinstance(pooler_size, bool):
        return pooler_size
    return backbone_hidden_size(backbone_config, "HydraConfig")


class HydraConfig(PretrainedConfig):
    r"""Configuration of [`HydraModel`]: a vision backbone, the projector, the label-pair gate, the logits and the
    online probe. Defaults are those of the Hydra / SimLAP code (Wu et al. 2024) as the specification gives them.

    The class names live in `id2label` / `label2id` (standard `PretrainedConfig` fields, or `labels=`); the
    label-embedding table and the probe have one row per class.

    Args:
        backbone_config (`PretrainedConfig` or `dict`, *optional*): configuration of the `AutoModel` vision
            backbone (a dict needs `model_type`).
        pooling (`str`, *optional*, defaults to `"auto"`): `"auto"` takes the backbone's `pooler_output` when it
            returns one (ViT: tanh dense layer on the class token; CLIP vision and DINOv2: layer-normed class
            token; ResNet: global average pool; ConvNeXt: layer-normed global average; Swin: average of the last
            stage's tokens) and the mean of `last_hidden_state` otherwise; `"pooler"` requires the pooler output;
            `"mean"` averages the token states (or the feature map over height and width); `"cls"` takes the
            first token.
        label_embedding_dim (`int`, *optional*, defaults to `512`): width of the label-embedding table `E`.
        gate_hidden_size (`int`, *optional*, defaults to `1024`): hidden width of the gate MLP.
        projector_hidden_size (`int`, *optional*, defaults to `2048`): hidden width of the projector.
        feature_dim (`int`, *optional*, defaults to `256`): width of the projected features and of the gates.
        logit_variant (`str`, *optional*, defaults to `"gated_cosine"`): `"gated_cosine"` (variant A, cosine of
            the gated features over `logit_temperature`) or `"gated_scaled"` (variant B, gated dot product times the
            learnable `exp(s)`).
        logit_temperature (`float`, *optional*, defaults to `0.1`): temperature of `"gated_cosine"`.
        logit_scale_init (`float`, *optional*, defaults to `log(10)`): initial `s` of `"gated_scaled"`.
        pair_type (`str`, *optional*, defaults to `"arbitrary"`): how target classes are drawn when a batch
            brings none, see [`sample_target_labels`].
        probe_weight (`float`, *optional*, defaults to `1.0`): weight of the online probe's cross-entropy in the
            loss (it only trains the probe: its input is detached).
        image_size (`int`, *optional*): side of the square images the collator makes (default: the backbone's
            `image_size`, else 224).
        image_mean (`list[float]`, *optional*, defaults to `[0.5, 0.5, 0.5]`): per-channel mean subtracted.
        image_std (`list[float]`, *optional*, defaults to `[0.5, 0.5, 0.5]`): per-channel deviation divided by.
        initializer_range (`float`, *optional*, defaults to `0.02`): standard deviation of the head's linear and
            embedding weights at initialisation.
        labels (`Sequence[str]`, *optional*): class names; sets `id2label` / `label2id` (not stored as such).
    """

    model_type = "hydra_encoder"
    sub_configs = {"backbone_config": AutoConfig}
    # Trainer's evaluation keeps only the probe logits of each batch (for `probe_metrics`).
    keys_to_ignore_at_inference = [
        "embeddings",
        "gated_embeddings",
        "gates",
        "backbone_features",
        "target_labels",
        "contrastive_loss",
        "probe_loss",
    ]

    def __init__(
        self,
        backbone_config: PretrainedConfig | dict[str, Any] | None = None,
        pooling: str = "auto",
        label_embedding_dim: int = 512,
        gate_hidden_size: int = 1024,
        projector_hidden_size: int = 2048,
        feature_dim: int = 256,
        logit_variant: str = "gated_cosine",
        logit_temperature: float = 0.1,
        logit_scale_init: float = math.log(10.0),
        pair_type: str = "arbitrary",
        probe_weight: float = 1.0,
        image_size: int | None = None,
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
        initializer_range: float = 0.02,
        labels: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(backbone_config, dict):
            if "model_type" not in backbone_config:
                raise ValueError("backbone_config dict needs a 'model_type' key (e.g. 'vit', 'resnet').")
            backbone_config = AutoConfig.for_model(**backbone_config)
        if pooling not in POOLING_MODES:
            raise ValueError(f"Unknown pooling {pooling!r}; expected one of {POOLING_MODES}.")
        if logit_variant not in LOGIT_VARIANTS:
            raise ValueError(f"Unknown logit_variant {logit_variant!r}; expected one of {LOGIT_VARIANTS}.")
        if pair_type not in PAIR_TYPES:
            raise ValueError(f"Unknown pair_type {pair_type!r}; expected one of {PAIR_TYPES}.")
        if not (
            isinstance(logit_temperature, (int, float))
            and math.isfinite(logit_temperature)
            and logit_temperature > 0
        ):
            raise ValueError(f"logit_temperature must be a finite number > 0, got {logit_temperature!r}.")
        if not (isinstance(logit_scale_init, (int, float)) and math.isfinite(logit_scale_init)):
            raise ValueError(f"logit_scale_init must be a finite number, got {logit_scale_init!r}.")
        if not (isinstance(probe_weight, (int, float)) and math.isfinite(probe_weight) and probe_weight >= 0):
            raise ValueError(f"probe_weight must be a finite number >= 0, got {probe_weight!r}.")
        if image_size is None:
            image_size = getattr(backbone_config, "image_size", None)
            image_size = (
                image_size if isinstance(image_size, int) and not isinstance(image_size, bool) else 224
            )
        image_mean, image_std = [float(v) for v in image_mean], [float(v) for v in image_std]
        channels = int(getattr(backbone_config, "num_channels", 3) or 3)
        if len(image_mean) != channels or len(image_std) != channels:
            raise ValueError(
                f"image_mean and image_std need one value per channel ({channels}), got {image_mean} and {image_std}."
            )
        if any(s <= 0 for s in image_std):
            raise ValueError(f"image_std values must be > 0, got {image_std}.")
        if labels is not None:
            names = [str(n) for n in labels]
            if len(set(names)) != len(names):
                raise ValueError(f"labels must be distinct class names, got {names}.")
            kwargs["id2label"] = dict(enumerate(names))
            kwargs.pop("num_labels", None)
            kwargs.pop("label2id", None)
        self.backbone_config = backbone_config
        self.pooling = pooling
        self.label_embedding_dim = _positive_int("label_embedding_dim", label_embedding_dim)
        self.gate_hidden_size = _positive_int("gate_hidden_size", gate_hidden_size)
        self.projector_hidden_size = _positive_int("projector_hidden_size", projector_hidden_size)
        self.feature_dim = _positive_int("feature_dim", feature_dim)
        self.logit_variant = logit_variant
        self.logit_temperature = float(logit_temperature)
        self.logit_scale_init = float(logit_scale_init)
        self.pair_type = pair_type
        self.probe_weight = float(probe_weight)
        self.image_size = _positive_int("image_size", image_size)
        self.image_mean = image_mean
        self.image_std = image_std
        self.initializer_range = float(initializer_range)
        super().__init__(**kwargs)
        names = [str(self.id2label[i]) for i in sorted(self.id2label)]
        if sorted(self.id2label) != list(range(len(names))):
            raise ValueError(
                f"id2label must map 0..{len(names) - 1} to class names, got keys {sorted(self.id2label)}."
            )
        if len(set(names)) != len(names):
            raise ValueError(f"id2label holds repeated class names: {names}.")
        self.label2id = {name: i for i, name in enumerate(names)}

    @property
    def backbone_feature_size(self) -> int:
        """Width of the pooled backbone features (the projector's and the probe's input)."""
        if self.backbone_config is None:
            raise ValueError("HydraConfig has no backbone_config.")
        return vision_feature_size(self.backbone_config, self.pooling)


# -- pair sampling, logits -------------------------------------------------------------------------------


def _check_label_tensor(name: str, labels: Any, owner: str, batch: int | None = None) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{owner}: {name} must be a torch.Tensor of class ids, got {type(labels).__name__}.")
    if labels.dtype in (torch.bool,) or labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"{owner}: {name} must hold integer class ids, got dtype {labels.dtype}.")
    if labels.dim() != 1:
        raise ValueError(f"{owner}: {name} must have shape [B], got shape {tuple(labels.shape)}.")
    if batch is not None and labels.shape[0] != batch:
        raise ValueError(f"{owner}: {name} has {labels.shape[0]} entries for a batch of {batch}.")
    return labels.long()


def _check_in_label_map(name: str, labels: torch.Tensor, num_labels: int, owner: str) -> None:
    bad = (labels < 0) | (labels >= num_labels)
    if bool(bad.any()):
        values = sorted({int(v) for v in labels[bad].tolist()})
        raise ValueError(
            f"{owner}: {name} hold class id(s) {values[:10]} outside the label map of {num_labels} classes "
            f"(ids 0..{num_labels - 1})."
        )


def sample_target_labels(
    labels: torch.Tensor,
    pair_type: str,
    generator: torch.Generator | None = None,
    num_labels: int | None = None,
) -> torch.Tensor:
    """Target classes `y2` for anchors of classes `labels` (`y1`), as Hydra draws them.

    Args:
        labels (`torch.LongTensor` of shape `(B,)`): the anchors' class ids.
        pair_type (`str`): `"arbitrary"` (the labels of a randomly permuted batch: a permutation of `labels`, so
            a pair may be identical by chance), `"identical"` (`y2 = y1`, SupCon-like) or `"distinct"` (a class
            drawn uniformly among the label set's classes other than `y1`).
        generator (`torch.Generator`, *optional*): source of randomness (seed it to replay a draw); `None` uses
            torch's global generator.
        num_labels (`int`, *optional*): size of the label map; the label set of `"distinct"` is then every class
            `0..num_labels-1` (a drawn class may be absent from the batch), else the classes present in `labels`.
            When given, `labels` are checked against it.

    Returns:
        `torch.LongTensor` of shape `(B,)` on the device of `labels`.

    Raises:
        `ValueError`: for an unknown `pair_type`, ids outside the label map, or `"distinct"` with a label set of
            fewer than two classes.
    """
    owner = "sample_target_labels"
    labels = _check_label_tensor("labels", labels, owner)
    if pair_type not in PAIR_TYPES:
        raise ValueError(f"{owner}: unknown pair_type {pair_type!r}; expected one of {PAIR_TYPES}.")
    if num_labels is not None:
        num_labels = _positive_int("num_labels", num_labels)
        _check_in_label_map("labels", labels, num_labels, owner)
    if pair_type == "identical":
        return labels.clone()
    where = generator.device if generator is not None else torch.device("cpu")
    if pair_type == "arbitrary":
        perm = torch.randperm(labels.shape[0], generator=generator, device=where).to(labels.device)
        return labels[perm]
    classes = (
        torch.arange(num_labels, device=labels.device) if num_labels is not None else torch.unique(labels)
    )
    if classes.numel() < 2:
        source = f"a label map of {num_labels} class" if num_labels is not None else "a batch of one class"
        raise ValueError(f"{owner}: pair_type='distinct' needs at least two classes, got {source}.")
    count = classes.numel()
    index = torch.searchsorted(classes, labels)
    offset = torch.randint(1, count, (labels.shape[0],), generator=generator, device=where).to(labels.device)
    return classes[(index + offset) % count]


def gated_view(embeddings: torch.Tensor, gates: torch.Tensor, variant: str = "gated_cosine") -> torch.Tensor:
    """The features an anchor is compared with under its gate: `n(g * n(z))` for `"gated_cosine"`, `g * n(z)` for
    `"gated_scaled"` (whose logit is the dot product of two such views under the same gate).

    Args:
        embeddings (`torch.Tensor` of shape `(B, D)`): projected features `z` (normalised here).
        gates (`torch.Tensor` of shape `(B, D)`): the gates `g`, in `(0, 1)`.
        variant (`str`, *optional*, defaults to `"gated_cosine"`): one of `LOGIT_VARIANTS`.
    """
    if variant not in LOGIT_VARIANTS:
        raise ValueError(f"Unknown logit variant {variant!r}; expected one of {LOGIT_VARIANTS}.")
    view = gates * F.normalize(embeddings, dim=-1)
    return F.normalize(view, dim=-1) if variant == "gated_cosine" else view


def hydra_logits(
    anchors: torch.Tensor,
    gates: torch.Tensor,
    rows: torch.Tensor,
    variant: str = "gated_cosine",
    scale: torch.Tensor | float = 10.0,
) -> torch.Tensor:
    """Logits `[B, N]` of `B` anchors against `N` rows, every row seen through the anchor's own gate.

    `"gated_cosine"`: `l_ik = cos(g_i * n(a_i), g_i * n(r_k)) * scale` (scale `1 / temperature`);
    `"gated_scaled"`: `l_ik = ((n(a_i) * g_i * g_i) . n(r_k)) * scale` (scale `exp(s)`). Computed without
    materialising the `[B, N, D]` gated rows.

    Args:
        anchors (`torch.Tensor` of shape `(B, D)`): the anchors' projected features.
        gates (`torch.Tensor` of shape `(B, D)`): each anchor's gate.
        rows (`torch.Tensor` of shape `(N, D)`): the projected features compared with (the anchors among them).
        variant (`str`, *optional*, defaults to `"gated_cosine"`): one of `LOGIT_VARIANTS`.
        scale (`torch.Tensor | float`, *optional*, defaults to `10.0`): multiplier of the similarities.
    """
    if variant not in LOGIT_VARIANTS:
        raise ValueError(f"Unknown logit variant {variant!r}; expected one of {LOGIT_VARIANTS}.")
    a, r = F.normalize(anchors, dim=-1), F.normalize(rows, dim=-1)
    g2 = gates * gates
    dots = (a * g2) @ r.T
    if variant == "gated_scaled":
        return dots * scale
    # |g_i * n(a_i)| and |g_i * n(r_k)|, floored as F.normalize floors a norm (eps 1e-12)
    eps2 = 1e-24
    anchor_norm = (g2 * a * a).sum(-1).clamp_min(eps2).sqrt()
    row_norm = (g2 @ (r * r).T).clamp_min(eps2).sqrt()
    return dots / (anchor_norm[:, None] * row_norm) * scale


# -- the loss --------------------------------------------------------------------------------------------


class HydraLoss(ContrastiveLoss):
    r"""Hydra's multi-positive loss over label-pair-gated logits, plus the online probe's cross-entropy.

    For anchor `i` of class `y1_i` with target class `y2_i` and logits `l_i.` (see [`hydra_logits`], centred on
    the row mean): positives `P_i = {k != i : y_k = y2_i}`, negatives `N_i = {k : y_k not in {y1_i, y2_i}}`,

        L_i = 1/|P_i| sum_{k in P_i} [log(exp(l_ik) + sum_{n in N_i} exp(l_in)) - l_ik],

    averaged over the anchors that have at least one positive (the others are left out and counted). The total
    is `L + probe_weight * CE(probe_logits, y1)`.

    Across processes, the projected features and labels of every process are gathered (features with
    gradient) and this process's anchors are scored against all of them; the local loss is
    `world_size * sum_local L_i / (anchors with positives, all processes)` and the probe term likewise, so that
    DDP's average of gradients equals the gradient of one process on the whole batch.

    Args:
        num_labels (`int`): size of the label map; labels and target labels outside `0..num_labels-1` are refused.
        logit_variant (`str`, *optional*, defaults to `"gated_cosine"`): one of `LOGIT_VARIANTS`.
        temperature (`float`, *optional*, defaults to `0.1`): temperature of `"gated_cosine"`.
        probe_weight (`float`, *optional*, defaults to `1.0`): weight of the probe's cross-entropy.
        gather (`bool | None`, *optional*): gather rows from every process (`None`: when distributed).

    Example::

        loss = HydraLoss(num_labels=10)
        out = loss(projected, gates, labels, target_labels, probe_logits=probe_logits)
        out.loss.backward()
    """

    citation = HYDRA_CITATION

    def __init__(
        self,
        num_labels: int,
        logit_variant: str = "gated_cosine",
        temperature: float = 0.1,
        probe_weight: float = 1.0,
        gather: bool | None = None,
    ) -> None:
        super().__init__()
        self.num_labels = _positive_int("num_labels", num_labels)
        if logit_variant not in LOGIT_VARIANTS:
            raise ValueError(f"Unknown logit_variant {logit_variant!r}; expected one of {LOGIT_VARIANTS}.")
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}.")
        if not (isinstance(probe_weight, (int, float)) and math.isfinite(probe_weight) and probe_weight >= 0):
            raise ValueError(f"probe_weight must be a finite number >= 0, got {probe_weight!r}.")
        self.logit_variant = logit_variant
        self.temperature = float(temperature)
        self.probe_weight = float(probe_weight)
        self.gather = gather

    @classmethod
    def from_config(cls, config: HydraConfig, gather: bool | None = None) -> HydraLoss:
        """The loss a [`HydraConfig`] describes."""
        return cls(
            config.num_labels, config.logit_variant, config.logit_temperature, config.probe_weight, gather
        )

    def config_dict(self) -> dict[str, Any]:
        return {
            "num_labels": self.num_labels,
            "logit_variant": self.logit_variant,
            "temperature": self.temperature if self.logit_variant == "gated_cosine" else None,
            "probe_weight": self.probe_weight,
            "gather": self.gather,
            "local_loss": True,
        }

    def _scale(self, logit_scale: Any, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        owner = type(self).__name__
        if self.logit_variant == "gated_cosine":
            if logit_scale is not None:
                raise ValueError(
                    f"{owner}: logit_variant='gated_cosine' uses 1 / temperature; got a logit_scale as well "
                    "(pass it only with 'gated_scaled')."
                )
            return torch.tensor(1.0 / self.temperature, device=device, dtype=dtype)
        if logit_scale is None:
            raise ValueError(
                f"{owner}: logit_variant='gated_scaled' needs logit_scale (exp(s), a scalar tensor)."
            )
        t = (
            logit_scale
            if isinstance(logit_scale, torch.Tensor)
            else torch.tensor(float(logit_scale), device=device)
        )
        if t.numel() != 1:
            raise ValueError(f"{owner}: logit_scale must be a scalar, got shape {tuple(t.shape)}.")
        return upcast(t.reshape(())).to(device)

    def forward(
        self,
        embeddings: torch.Tensor,
        gates: torch.Tensor,
        labels: torch.Tensor,
        target_labels: torch.Tensor,
        logit_scale: torch.Tensor | float | None = None,
        probe_logits: torch.Tensor | None = None,
    ) -> LossOutput:
        """Loss of this process's `B` anchors.

        Args:
            embeddings (`torch.Tensor` of shape `(B, D)`): projected features `z` (L2-normalised here).
            gates (`torch.Tensor` of shape `(B, D)`): each anchor's gate for its class pair.
            labels (`torch.LongTensor` of shape `(B,)`): classes `y1`.
            target_labels (`torch.LongTensor` of shape `(B,)`): target classes `y2`.
            logit_scale (`torch.Tensor | float`, *optional*): `exp(s)` of `"gated_scaled"` (required there,
                refused with `"gated_cosine"`).
            probe_logits (`torch.Tensor` of shape `(B, num_labels)`, *optional*): the online probe's logits.

        Returns:
            [`LossOutput`] with components `contrastive` (this process's share of the loss: the mean over processes
            is the whole batch's), `probe` and `probe_accuracy` (over this process's rows), `anchors_with_positives`
            (share of this process's anchors that have a positive), `mean_positives` and `logit_scale`.
        """
        owner = type(self).__name__
        check_2d("embeddings", embeddings, owner)
        check_2d("gates", gates, owner)
        if gates.shape != embeddings.shape:
            raise ValueError(
                f"{owner}: gates {tuple(gates.shape)} must have the shape of embeddings {tuple(embeddings.shape)}."
            )
        batch = embeddings.shape[0]
        labels = _check_label_tensor("labels", labels, owner, batch).to(embeddings.device)
        target = _check_label_tensor("target_labels", target_labels, owner, batch).to(embeddings.device)
        _check_in_label_map("labels", labels, self.num_labels, owner)
        _check_in_label_map("target_labels", target, self.num_labels, owner)
        if probe_logits is not None:
            check_2d("probe_logits", probe_logits, owner)
            if tuple(probe_logits.shape) != (batch, self.num_labels):
                raise ValueError(
                    f"{owner}: probe_logits must have shape {(batch, self.num_labels)}, got {tuple(probe_logits.shape)}."
                )
        self._check_finite(embeddings=embeddings, gates=gates, probe_logits=probe_logits)

        emb = F.normalize(upcast(embeddings), dim=-1)
        g = upcast(gates)
        scale = self._scale(logit_scale, emb.device, emb.dtype)
        if self._resolve_gather(self.gather):
            comm = distributed.collective_device(emb)
            sizes = [s[0] for s in distributed.all_gather_sizes(batch, device=comm)]
            rows = distributed.gather_with_grad(emb, sizes)
            row_labels = distributed.gather_no_grad(labels, sizes)
        else:
            sizes, rows, row_labels = [batch], emb, labels
        world = len(sizes)

        logits = hydra_logits(emb, g, rows, self.logit_variant, scale)
        logits = logits - logits.mean(dim=1, keepdim=True)
        not_self = torch.ones_like(logits, dtype=torch.bool)
        anchors = torch.arange(batch, device=logits.device)
        not_self[anchors, local_targets(batch, sizes, logits.device)] = False
        positives = (row_labels[None, :] == target[:, None]) & not_self
        negatives = (row_labels[None, :] != labels[:, None]) & (row_labels[None, :] != target[:, None])

        # log(sum over negatives of exp), -inf for anchors without negatives (kept finite inside the graph)
        has_negative = negatives.any(dim=1)
        masked = torch.where(negatives, logits, torch.full_like(logits, -math.inf))
        masked = torch.where(has_negative[:, None], masked, torch.zeros_like(logits))
        negative_lse = torch.logsumexp(masked, dim=1)
        negative_lse = torch.where(has_negative, negative_lse, torch.full_like(negative_lse, -math.inf))
        terms = torch.logaddexp(logits, negative_lse[:, None]) - logits
        terms = torch.where(positives, terms, torch.zeros_like(terms))
        n_pos = positives.sum(dim=1)
        has_positive = n_pos > 0
        per_anchor = terms.sum(dim=1) / n_pos.clamp_min(1)
        local_sum = torch.where(has_positive, per_anchor, torch.zeros_like(per_anchor)).sum()

        if world > 1:
            totals = distributed.all_gather_sizes(
                [int(has_positive.sum()), batch], device=distributed.collective_device(emb)
            )
            anchors_total, rows_total = sum(t[0] for t in totals), sum(t[1] for t in totals)
        else:
            anchors_total, rows_total = int(has_positive.sum()), batch
        if rows_total == 0:
            raise ValueError(f"{owner}: every process brought an empty batch.")
        if anchors_total == 0:
            logger.warning(
                "HydraLoss: no anchor of the batch has a positive (no other row of its target class); the "
                "contrastive term is 0 for this batch. Use larger batches or fewer classes per batch."
            )
            contrastive = logits.sum() * 0.0
        else:
            contrastive = local_sum * (world / anchors_total)

        components: dict[str, torch.Tensor] = {}
        loss = contrastive
        if probe_logits is not None:
            probe_sum = F.cross_entropy(upcast(probe_logits), labels, reduction="sum")
            probe = probe_sum * (world / rows_total)
            loss = loss + self.probe_weight * probe
            with torch.no_grad():
                correct = (probe_logits.argmax(-1) == labels).float()
                components["probe"] = (probe_sum / max(batch, 1)).detach()
                components["probe_accuracy"] = correct.mean() if batch else correct.sum()
        with torch.no_grad():
            components["contrastive"] = contrastive.detach()
            components["anchors_with_positives"] = (
                has_positive.float().mean() if batch else has_positive.sum().float()
            )
            kept = n_pos[has_positive].float()
            components["mean_positives"] = kept.mean() if kept.numel() else kept.sum()
            components["logit_scale"] = scale.detach()
        return LossOutput(loss, components)


# -- the model -------------------------------------------------------------------------------------------


@dataclass
class HydraOutput(ModelOutput):
    """Output of [`HydraModel`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): contrastive loss plus `probe_weight` times the probe's
            cross-entropy, when `labels` are given.
        probe_logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`): the online linear probe's scores
            (computed on detached backbone features).
        embeddings (`torch.FloatTensor` of shape `(batch_size, feature_dim)`): projected, L2-normalised features.
        gated_embeddings (`torch.FloatTensor` of shape `(batch_size, feature_dim)`, *optional*): each image under its
            own class pair's gate ([`gated_view`]), when `labels` are given.
        gates (`torch.FloatTensor` of shape `(batch_size, feature_dim)`, *optional*): the gates, when `labels` are
            given.
        backbone_features (`torch.FloatTensor` of shape `(batch_size, hidden_size)`): pooled backbone features (the
            representation evaluated by linear probing).
        target_labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*): the target classes used (given or
            drawn).
        contrastive_loss (`torch.FloatTensor` of shape `()`, *optional*): the contrastive term alone (detached).
        probe_loss (`torch.FloatTensor` of shape `()`, *optional*): the probe's cross-entropy (detached).
    """

    loss: torch.FloatTensor | None = None
    probe_logits: torch.FloatTensor | None = None
    embeddings: torch.FloatTensor | None = None
    gated_embeddings: torch.FloatTensor | None = None
    gates: torch.FloatTensor | None = None
    backbone_features: torch.FloatTensor | None = None
    target_labels: torch.LongTensor | None = None
    contrastive_loss: torch.FloatTensor | None = None
    probe_loss: torch.FloatTensor | None = None


class HydraGate(nn.Module):
    """The feature filter of a class pair: `sigmoid(MLP((E[y1] + E[y2]) / 2))`.

    `E` is a `[num_labels, label_embedding_dim]` table; the MLP is `ReLU, BatchNorm1d, Linear(E, H), ReLU,
    BatchNorm1d, Linear(H, feature_dim)`.

    Args:
        num_labels (`int`): number of classes.
        label_embedding_dim (`int`): width of the label embeddings.
        hidden_size (`int`): hidden width of the MLP.
        feature_dim (`int`): width of the gates.
    """

    def __init__(self, num_labels: int, label_embedding_dim: int, hidden_size: int, feature_dim: int) -> None:
        super().__init__()
        self.label_embeddings = nn.Embedding(num_labels, label_embedding_dim)
        self.mlp = nn.Sequential(
            nn.ReLU(),
            nn.BatchNorm1d(label_embedding_dim),
            nn.Linear(label_embedding_dim, hidden_size),
            nn.ReLU(),
            nn.BatchNorm1d(hidden_size),
            nn.Linear(hidden_size, feature_dim),
        )

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        pair = (self.label_embeddings(first) + self.label_embeddings(second)) / 2
        return torch.sigmoid(self.mlp(pair))


class HydraPreTrainedModel(PreTrainedModel):
    """Base of [`HydraModel`]: its config class, weight initialisation and input name, as transformers expects."""

    config_class = HydraConfig
    base_model_prefix = "backbone"
    main_input_name = "pixel_values"
    # The loss is a mean over anchors, not over items: Trainer divides it by the accumulation steps itself.
    accepts_loss_kwargs = False
    # Activation checkpointing reaches the backbone's layers (transformers refuses a backbone that has none).
    supports_gradient_checkpointing = True

    def _init_weights(self, module: nn.Module) -> None:
        # Linear, embedding, LayerNorm and BatchNorm layers of the head: transformers' defaults at
        # `initializer_range`; the backbone initialises (or loads) itself.
        if isinstance(module, HydraModel):
            if module.logit_scale is not None:
                init.constant_(module.logit_scale, self.config.logit_scale_init)
            return
        super()._init_weights(module)


class HydraModel(HubMixin, HydraPreTrainedModel):
    r"""Hydra / SimLAP (Wu et al. 2024): a vision backbone trained contrastively on arbitrary class pairs through a
    label-pair-gated feature filter, with an online linear probe.

    The backbone is any transformers vision model built by `AutoModel` (ViT, CLIP vision, DINOv2, ResNet,
    ConvNeXt, Swin...); its pooled features (see `HydraConfig.pooling`) go to a projector
    (`Linear -> ReLU -> Linear -> LayerNorm`) and, detached, to a linear probe. With `labels` (and optionally
    `target_labels`; drawn by `config.pair_type` with torch's global generator when absent), `forward` computes
    the gates and the [`HydraLoss`].

    Example::

        >>> from transformers import ViTConfig
        >>> from hf_contrastive.vision.hydra import HydraModel
        >>> model = HydraModel.from_backbone(ViTConfig(image_size=32, patch_size=8, hidden_size=64,
        ...     num_hidden_layers=2, num_attention_heads=4, intermediate_size=128), labels=["cat", "dog", "car"])
        >>> out = model(pixel_values, labels=torch.tensor([0, 1, 2, 0]))
        >>> out.loss.backward()
    """

    card_template = "hydra_encoder.md"
    card_pipeline_tag = "image-feature-extraction"
    card_tags = ("image-feature-extraction", "contrastive-learning", "hydra")
    card_citations = (HYDRA_CITATION,)
    # Gather rows from every process in the loss: `None` when training is distributed (a run-time choice, not a
    # saved setting).
    gather: bool | None = None

    def __init__(self, config: HydraConfig, backbone: PreTrainedModel | None = None) -> None:
        super().__init__(config)
        if config.backbone_config is None:
            raise ValueError("HydraConfig.backbone_config is required to build a HydraModel.")
        self.backbone = backbone if backbone is not None else AutoModel.from_config(config.backbone_config)
        if getattr(self.backbone.config, "_attn_implementation", "eager") is None:
            # The composite config resets the sub-config's attention implementation; set one explicitly.
            self.backbone.config._attn_implementation = (
                "sdpa" if getattr(self.backbone, "_supports_sdpa", False) else "eager"
            )
        width = config.backbone_feature_size
        self.projector = nn.Sequential(
            nn.Linear(width, config.projector_hidden_size),
            nn.ReLU(),
            nn.Linear(config.projector_hidden_size, config.feature_dim),
            nn.LayerNorm(config.feature_dim),
        )
        self.gate = HydraGate(
            config.num_labels, config.label_embedding_dim, config.gate_hidden_size, config.feature_dim
        )
        self.probe = nn.Linear(width, config.num_labels)
        self.logit_scale = (
            nn.Parameter(torch.tensor(float(config.logit_scale_init)))
            if config.logit_variant == "gated_scaled"
            else None
        )
        self.card_info = ModelCardInfo()
        self.post_init()

    # -- construction --------------------------------------------------------------------------------------
    @classmethod
    def from_backbone(
        cls,
        backbone: str | os.PathLike | PretrainedConfig | PreTrainedModel,
        labels: Sequence[str] | None = None,
        num_labels: int | None = None,
        backbone_kwargs: Mapping[str, Any] | None = None,
        **config_kwargs: Any,
    ) -> HydraModel:
        """A new head on a vision backbone.

        Args:
            backbone (`str | os.PathLike | PretrainedConfig | PreTrainedModel`): a folder or Hub id (its weights
                are loaded with `AutoModel.from_pretrained`), a config (random initialisation, training from
                scratch) or a built model.
            labels (`Sequence[str]`, *optional*): class names (or give `num_labels`).
            num_labels (`int`, *optional*): number of classes, named `LABEL_0`... when `labels` is not given.
            backbone_kwargs (`Mapping[str, Any]`, *optional*): loading options of `AutoModel.from_pretrained`
                (`dtype`, `revision`, `local_files_only`...).
            config_kwargs (`Any`): [`HydraConfig`] settings (`pooling`, `feature_dim`, `pair_type`...).
        """
        if labels is None and num_labels is None:
            raise ValueError("HydraModel.from_backbone needs the classes: labels=[...] or num_labels=N.")
        if labels is not None and num_labels is not None and len(labels) != num_labels:
            raise ValueError(f"labels has {len(labels)} names but num_labels is {num_labels}.")
        label_kwargs: dict[str, Any] = (
            {"labels": list(labels)} if labels is not None else {"num_labels": num_labels}
        )
        source = None
        if isinstance(backbone, PreTrainedModel):
            model_backbone = backbone
        elif isinstance(backbone, PretrainedConfig):
            model_backbone = AutoModel.from_config(backbone)
        elif isinstance(backbone, (str, os.PathLike)):
            source = os.fspath(backbone)
            model_backbone = AutoModel.from_pretrained(source, **dict(backbone_kwargs or {}))
        else:
            raise TypeError(
                "backbone must be a folder / Hub id, a PretrainedConfig or a PreTrainedModel, got "
                f"{type(backbone).__name__}."
            )
        if backbone_kwargs and not isinstance(backbone, (str, os.PathLike)):
            raise ValueError("backbone_kwargs are loading options; they apply only when backbone is a path.")
        config = HydraConfig(backbone_config=model_backbone.config, **label_kwargs, **config_kwargs)
        model = cls(config, backbone=model_backbone)
        if source is not None and not os.path.exists(source):
            model.card_info.base_model = source  # a Hub id: the card links to it
        return model

    # -- labels ----------------------------------------------------------------------------------------
    def label_ids(self, labels: Any) -> torch.LongTensor:
        """Class ids of `labels` (names of the label map, ids, or a tensor of ids) as a `[n]` tensor.

        Raises:
            `ValueError`: for a name not in the label map or an id outside `0..num_labels-1`.
        """
        if isinstance(labels, torch.Tensor):
            ids = _check_label_tensor("labels", labels.reshape(-1), type(self).__name__)
        else:
            items = [labels] if isinstance(labels, (str, int, np.integer)) else list(labels)
            values = []
            for item in items:
                if isinstance(item, str):
                    if item not in self.config.label2id:
                        names = list(self.config.label2id)
                        raise ValueError(
                            f"Class {item!r} is not in the label map of {len(names)} classes "
                            f"({names[:10]}{'...' if len(names) > 10 else ''})."
                        )
                    values.append(self.config.label2id[item])
                elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):
                    values.append(int(item))
                else:
                    raise TypeError(f"Class labels are names or integer ids, got {type(item).__name__}.")
            ids = torch.tensor(values, dtype=torch.long)
        _check_in_label_map("labels", ids, self.config.num_labels, type(self).__name__)
        return ids.to(self.device)

    def pair_gates(self, first: Any, second: Any) -> torch.Tensor:
        """Gates `[n, feature_dim]` of class pairs `(first[j], second[j])` (names or ids).

        Call it in eval mode: in training mode the gate's BatchNorm uses the statistics of the pairs given.

        Raises:
            `ValueError`: for a class outside the label map, or lists of different lengths.
        """
        a, b = self.label_ids(first), self.label_ids(second)
        if a.shape != b.shape:
            raise ValueError(
                f"pair_gates needs as many first as second classes, got {a.numel()} and {b.numel()}."
            )
        return self.gate(a, b)

    # -- forward ---------------------------------------------------------------------------------------
    def _pool(self, out: Any) -> torch.Tensor:
        mode = self.config.pooling
        pooled = getattr(out, "pooler_output", None)
        if mode == "pooler" or (mode == "auto" and pooled is not None):
            if pooled is None:
                raise ValueError(
                    f"The backbone {type(self.backbone).__name__} returns no pooler_output; use pooling='mean' or "
                    "'cls'."
                )
            return pooled.flatten(1)
        last = out.last_hidden_state
        if mode == "cls":
            if last.dim() != 3:
                raise ValueError(
                    f"pooling='cls' needs token states [B, T, H]; {type(self.backbone).__name__} returns shape "
                    f"{tuple(last.shape)} (use 'mean')."
                )
            return last[:, 0]
        if last.dim() == 3:
            return last.mean(dim=1)
        if last.dim() == 4:
            return last.mean(dim=(2, 3))
        raise ValueError(f"Cannot pool backbone states of shape {tuple(last.shape)}.")

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        target_labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> HydraOutput:
        r"""Embed images; with `labels`, gate and score them with [`HydraLoss`].

        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, channels, height, width)`): the images.
            labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*): classes `y1`; give the loss.
            target_labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*): classes `y2`; drawn by
                `config.pair_type` with torch's global generator when absent.
            output_hidden_states (`bool`, *optional*): passed to the backbone (its hidden states are not returned).
            return_dict (`bool`, *optional*): accepted for `Trainer`; the output is always a [`HydraOutput`].
        """
        owner = type(self).__name__
        if pixel_values is None:
            raise ValueError(f"{owner}.forward needs pixel_values.")
        if pixel_values.dim() != 4:
            raise ValueError(
                f"{owner}: pixel_values must have shape [B, C, H, W], got shape {tuple(pixel_values.shape)}."
            )
        if target_labels is not None and labels is None:
            raise ValueError(f"{owner}: target_labels were given without labels (the anchors' classes).")
        batch = pixel_values.shape[0]
        if labels is not None:
            labels = _check_label_tensor("labels", labels, owner, batch).to(pixel_values.device)
            _check_in_label_map("labels", labels, self.config.num_labels, owner)
            if target_labels is None:
                target_labels = sample_target_labels(
                    labels, self.config.pair_type, num_labels=self.config.num_labels
                )
            target_labels = _check_label_tensor("target_labels", target_labels, owner, batch).to(
                labels.device
            )
            _check_in_label_map("target_labels", target_labels, self.config.num_labels, owner)

        out = self.backbone(
            pixel_values=pixel_values, output_hidden_states=output_hidden_states, return_dict=True
        )
        features = self._pool(out)
        if features.shape[-1] != self.probe.in_features:
            raise ValueError(
                f"{owner}: the backbone's pooled features have width {features.shape[-1]}, the head was built for "
                f"{self.probe.in_features} (check HydraConfig.pooling for this backbone family)."
            )
        projected = self.projector(features)
        probe_logits = self.probe(features.detach())
        output = HydraOutput(
            probe_logits=probe_logits,
            embeddings=F.normalize(projected, dim=-1),
            backbone_features=features,
        )
        if labels is None:
            return output
        gates = self.gate(labels, target_labels)
        scale = self.logit_scale.exp() if self.logit_scale is not None else None
        result = self.hydra_loss()(
            projected, gates, labels, target_labels, logit_scale=scale, probe_logits=probe_logits
        )
        output.loss = result.loss
        output.gates = gates
        output.gated_embeddings = gated_view(projected, gates, self.config.logit_variant)
        output.target_labels = target_labels
        output.contrastive_loss = result.components["contrastive"]
        output.probe_loss = result.components.get("probe")
        self.__dict__["_last_components"] = result.components
        return output

    def hydra_loss(self) -> HydraLoss:
        """The [`HydraLoss`] of the current config; it gathers rows across processes as `self.gather` says."""
        return HydraLoss.from_config(self.config, gather=self.gather)

    @property
    def last_loss_components(self) -> dict[str, torch.Tensor]:
        """The named loss terms of the latest `forward` with labels (for logging)."""
        return dict(self.__dict__.get("_last_components", {}))

    @torch.no_grad()
    def encode_images(
        self, images: Sequence[Any], batch_size: int = 32, output: str = "backbone_features"
    ) -> torch.Tensor:
        """Features `[N, ...]` (float32, on CPU) of images given as paths or PIL images, in eval mode.

        Args:
            images (`Sequence[Any]`): paths or PIL images (resized and normalised as `config` says).
            batch_size (`int`, *optional*, defaults to `32`): images per forward.
            output (`str`, *optional*, defaults to `"backbone_features"`): `"backbone_features"`, `"embeddings"`
                (projected, normalised) or `"probe_logits"`.
        """
        if output not in ("backbone_features", "embeddings", "probe_logits"):
            raise ValueError(
                f"output must be 'backbone_features', 'embeddings' or 'probe_logits', got {output!r}."
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if isinstance(images, (str, os.PathLike, Image.Image)):
            raise TypeError("images must be a sequence of images, got a single one.")
        was_training = self.training
        self.eval()
        parts = []
        try:
            for start in range(0, len(images), batch_size):
                pixels = torch.stack(
                    [
                        image_to_pixels(
                            im, self.config.image_size, self.config.image_mean, self.config.image_std
                        )
                        for im in images[start : start + batch_size]
                    ]
                ).to(self.device, self.dtype)
                parts.append(getattr(self(pixel_values=pixels), output).float().cpu())
        finally:
            self.train(was_training)
        width = {"probe_logits": self.config.num_labels, "embeddings": self.config.feature_dim}.get(
            output, self.probe.in_features
        )
        return torch.cat(parts) if parts else torch.empty(0, width)

    # -- model card ------------------------------------------------------------------------------------
    def card_details(self) -> dict[str, Any]:
        """Settings of the head for `model_cards/hydra_encoder.md`."""
        config = self.config
        backbone_type = getattr(config.backbone_config, "model_type", None)
        names = [config.id2label[i] for i in range(config.num_labels)]
        if config.logit_variant == "gated_cosine":
            logits = f"gated cosine / temperature {config.logit_temperature:g}"
        else:
            value = float(self.logit_scale.detach().exp()) if self.logit_scale is not None else math.nan
            logits = f"gated dot product x learnable scale (now {value:.4g})"
        return {
            "title": f"Hydra {backbone_type or 'vision'} encoder",
            "description": (
                f"A `{backbone_type}` image encoder trained with Hydra / SimLAP (contrastive learning from arbitrary "
                "class pairs through a label-pair-gated feature filter), made with hf-contrastive."
            ),
            "backbone_type": backbone_type,
            "architecture": type(self.backbone).__name__,
            "pooling": config.pooling,
            "feature_size": self.probe.in_features,
            "feature_dim": config.feature_dim,
            "labels": names,
            "pair_type": config.pair_type,
            "logits": logits,
            "probe_weight": config.probe_weight,
            "image_size": config.image_size,
            "image_mean": config.image_mean,
            "image_std": config.image_std,
        }


# -- images and labelled data -------------------------------------------------------------------------------


def image_to_pixels(image: Any, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """`[3, size, size]` pixel values of an image (path or PIL): a plain bilinear resize to a square, scaled to
    `[0, 1]`, then `(x - mean) / std` per channel.

    Args:
        image (`Any`): a path or a PIL image (decoded with `hf_contrastive.vision.modeling.load_image`).
        size (`int`): the output side.
        mean (`Sequence[float]`): per-channel mean.
        std (`Sequence[float]`): per-channel deviation.
    """
    im = load_image(image).resize((int(size), int(size)), Image.BILINEAR)
    pixels = torch.from_numpy(np.asarray(im, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0
    mean_t = torch.tensor(list(mean), dtype=torch.float32)[:, None, None]
    std_t = torch.tensor(list(std), dtype=torch.float32)[:, None, None]
    return (pixels - mean_t) / std_t


def augmented_transform(
    config: HydraConfig, scale: tuple[float, float] = (0.5, 1.0), flip: bool = True
) -> augment.Compose:
    """A training-time transform for a [`HydraConfig`]: random resized crop to `config.image_size` (area range
    `scale`), horizontal flip (p 0.5) when `flip`, then normalisation with the config's mean and deviation
    (`hf_contrastive.vision.augment.global_view_transform`). Pass it as `image_transform` of a training
    collator; evaluate with the plain resize ([`image_to_pixels`], `HydraModel.encode_images`).

    Args:
        config (`HydraConfig`): the model's configuration.
        scale (`tuple[float, float]`, *optional*, defaults to `(0.5, 1.0)`): area range of the crop.
        flip (`bool`, *optional*, defaults to `True`): flip horizontally with probability 0.5.
    """
    return augment.global_view_transform(
        config.image_size, mean=config.image_mean, std=config.image_std, scale=scale, flip=flip
    )


class HydraImageCollator:
    r"""Rows with an image and a class -> `pixel_values` `[B, 3, S, S]` and `labels` `[B]`.

    Images are paths, PIL images or undecoded `datasets.Image` values; the default transform is a plain resize
    and normalisation ([`image_to_pixels`]); pass `image_transform` (PIL image -> `[3, H, W]` tensor, such as an
    augmentation) to replace it. Classes are integer ids or names of `label2id`. Other columns are ignored.

    Args:
        image_size (`int`, *optional*, defaults to `224`): side of the square images.
        image_mean (`Sequence[float]`, *optional*, defaults to `(0.5, 0.5, 0.5)`): per-channel mean.
        image_std (`Sequence[float]`, *optional*, defaults to `(0.5, 0.5, 0.5)`): per-channel deviation.
        image_column (`str`, *optional*, defaults to `"image"`): column of images.
        label_column (`str | None`, *optional*, defaults to `"label"`): column of classes (`None`: images only).
        label2id (`Mapping[str, int]`, *optional*): class name -> id, for rows that name their class.
        image_transform (`Callable`, *optional*): PIL image -> `[3, H, W]` tensor, instead of the plain resize.
    """

    def __init__(
        self,
        image_size: int = 224,
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
        image_column: str = "image",
        label_column: str | None = "label",
        label2id: Mapping[str, int] | None = None,
        image_transform: Any = None,
    ) -> None:
        self.image_size = _positive_int("image_size", image_size)
        self.image_mean, self.image_std = list(image_mean), list(image_std)
        self.image_column, self.label_column = image_column, label_column
        self.label2id = dict(label2id or {})
        self.image_transform = image_transform

    @classmethod
    def from_config(cls, config: HydraConfig, **kwargs: Any) -> HydraImageCollator:
        """The collator of a [`HydraConfig`]: its image size, mean, deviation and label map."""
        settings = {
            "image_size": config.image_size,
            "image_mean": config.image_mean,
            "image_std": config.image_std,
            "label2id": config.label2id,
        }
        settings.update(kwargs)
        return cls(**settings)

    def _label(self, value: Any, index: int) -> int:
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, str):
            if value not in self.label2id:
                raise ValueError(
                    f"Row {index}: class {value!r} is not in the label map of {len(self.label2id)} classes "
                    f"({list(self.label2id)[:10]})."
                )
            return int(self.label2id[value])
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return int(value)
        raise TypeError(f"Row {index}: a class must be an integer id or a class name, got {value!r}.")

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("HydraImageCollator got an empty batch.")
        images, labels = [], []
        for i, row in enumerate(rows):
            if self.image_column not in row:
                raise ValueError(f"Row {i} has no {self.image_column!r} column (columns: {sorted(row)}).")
            image = row[self.image_column]
            if self.image_transform is not None:
                images.append(self.image_transform(load_image(image)))
            else:
                images.append(image_to_pixels(image, self.image_size, self.image_mean, self.image_std))
            if self.label_column is not None:
                if self.label_column not in row:
                    raise ValueError(f"Row {i} has no {self.label_column!r} column (columns: {sorted(row)}).")
                labels.append(self._label(row[self.label_column], i))
        batch = {"pixel_values": torch.stack(images)}
        if self.label_column is not None:
            batch["labels"] = torch.tensor(labels, dtype=torch.long)
        return batch


def keyword_label(
    captions: Sequence[str], groups: Mapping[str, Sequence[str]] = KEYWORD_GROUPS
) -> int | None:
    """Index of the keyword group most of `captions` mention (whole words, lower case; ties go to the earlier
    group), or `None` when none mentions any group."""
    if isinstance(captions, str):
        captions = [captions]
    words = [set(re.findall(r"[a-z]+", str(c).lower())) for c in captions]
    votes = [sum(1 for w in words if w & set(group)) for group in groups.values()]
    best = max(range(len(votes)), key=lambda i: (votes[i], -i)) if votes else None
    return best if best is not None and votes[best] > 0 else None


def coco_keyword_labels(
    split: str = "train",
    root: str | os.PathLike | None = None,
    groups: Mapping[str, Sequence[str]] = KEYWORD_GROUPS,
) -> Dataset:
    """A COCO caption split with coarse classes derived from its captions ([`keyword_label`]).

    COCO captions carry no class labels; each image takes the keyword group most of its captions mention.
    Images whose captions mention no group are dropped, counted and logged.

    Args:
        split (`str`, *optional*, defaults to `"train"`): `"train"` or `"val"`.
        root (`str | os.PathLike`, *optional*): the COCO folder (default: the shared coco-mini copy).
        groups (`Mapping[str, Sequence[str]]`, *optional*, defaults to `KEYWORD_GROUPS`): class name -> keywords.

    Returns:
        `datasets.Dataset` with columns `image` (path), `label` (`ClassLabel` named after the groups) and
        `image_id`.
    """
    if not groups:
        raise ValueError("groups must name at least one class with its keywords.")
    rows = load_coco_captions(split, root=root)
    names = list(groups)
    data: dict[str, list[Any]] = {"image": [], "label": [], "image_id": []}
    dropped = 0
    for image, captions, image_id in zip(rows["image"], rows["captions"], rows["image_id"]):
        label = keyword_label(captions, groups)
        if label is None:
            dropped += 1
            continue
        data["image"].append(image)
        data["label"].append(label)
        data["image_id"].append(int(image_id))
    if dropped:
        logger.warning(
            "coco_keyword_labels(%r): dropped %d of %d images whose captions mention none of the classes %s.",
            split,
            dropped,
            len(rows),
            names,
        )
    features = Features(
        {"image": Value("string"), "label": ClassLabel(names=names), "image_id": Value("int64")}
    )
    return Dataset.from_dict(data, features=features)


def load_image_folder(path: str | os.PathLike) -> Dataset:
    """Images stored one folder per class (`path/<class>/<image>`), as a labelled dataset.

    Args:
        path (`str | os.PathLike`): the root folder; its sub-folders name the classes (sorted).

    Returns:
        `datasets.Dataset` with columns `image` (path) and `label` (`ClassLabel`).
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"No image folder at {root}.")
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise ValueError(f"{root} has no class sub-folders (expected {root}/<class>/<image>).")
    data: dict[str, list[Any]] = {"image": [], "label": []}
    for label, name in enumerate(names):
        for file in sorted((root / name).iterdir()):
            if file.is_file() and file.suffix.lower() in IMAGE_EXTENSIONS:
                data["image"].append(str(file))
                data["label"].append(label)
    if not data["image"]:
        raise ValueError(
            f"{root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in the class folders {names}."
        )
    return Dataset.from_dict(
        data, features=Features({"image": Value("string"), "label": ClassLabel(names=names)})
    )


def load_labelled_images(source: Mapping[str, Any]) -> Dataset:
    """A labelled image set from a recipe's data source.

    Args:
        source (`Mapping[str, Any]`): `{type: coco_keywords, split: train, root: ...}` ([`coco_keyword_labels`])
            or `{type: imagefolder, path: ...}` ([`load_image_folder`]).
    """
    if not isinstance(source, Mapping):
        raise TypeError(f"An image source is a mapping with a 'type', got {source!r}.")
    source = dict(source)
    kind = source.pop("type", None)
    if kind == "coco_keywords":
        unknown = sorted(set(source) - {"split", "root"})
        if unknown:
            raise ValueError(
                f"Unknown key(s) {unknown} for an image source of type coco_keywords (split, root)."
            )
        return coco_keyword_labels(source.get("split", "train"), root=source.get("root"))
    if kind == "imagefolder":
        unknown = sorted(set(source) - {"path"})
        if unknown or "path" not in source:
            raise ValueError("An image source of type imagefolder takes exactly one key, path.")
        return load_image_folder(source["path"])
    raise ValueError(f"Unknown image source type {kind!r}; expected 'coco_keywords' or 'imagefolder'.")


def majority_rate(train_labels: Sequence[int], eval_labels: Sequence[int]) -> float:
    """Accuracy on `eval_labels` of always predicting the most frequent class of `train_labels` (ties: lowest id)."""
    if not len(train_labels) or not len(eval_labels):
        raise ValueError("majority_rate needs non-empty train and evaluation labels.")
    counts = Counter(int(v) for v in train_labels)
    top = min(counts, key=lambda c: (-counts[c], c))
    return sum(int(v) == top for v in eval_labels) / len(eval_labels)


# -- training --------------------------------------------------------------------------------------------


def probe_metrics(eval_pred: Any) -> dict[str, float]:
    """`Trainer` metrics of a [`HydraModel`]: the online probe's accuracy (`eval_probe_accuracy`)."""
    logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
    labels = eval_pred.label_ids[0] if isinstance(eval_pred.label_ids, tuple) else eval_pred.label_ids
    predictions = np.asarray(logits).argmax(-1)
    return {"probe_accuracy": float((predictions == np.asarray(labels)).mean())}


@dataclass
class HydraTrainingArguments(TrainingArguments):
    r"""Training arguments of [`HydraTrainer`]: `TrainingArguments` with the defaults images and labels need.

    Args:
        remove_unused_columns (`bool`, *optional*, defaults to `False`): keep the image column for the collator.
        label_names (`list[str]`, *optional*, defaults to `["labels"]`): the evaluation loop's labels (the target
            classes are drawn in `forward`, not read from the batch).
        report_to (`Any`, *optional*, defaults to `"none"`): loggers.
    """

    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the image column."})
    label_names: list[str] | None = field(
        default_factory=lambda: ["labels"], metadata={"help": "Label keys."}
    )
    report_to: Any = field(default="none", metadata={"help": "Loggers."})


class HydraTrainer(AtomicCheckpointMixin, EngineMixin, Trainer):
    r"""Trains a [`HydraModel`] with its own loss ([`HydraLoss`], computed in `forward`).

    Batches come from a [`HydraImageCollator`] built from the model's config unless `data_collator` is given;
    evaluation reports `eval_probe_accuracy` ([`probe_metrics`]) unless `compute_metrics` is given. The loss's
    components (`contrastive`, `probe`, `probe_accuracy`, `anchors_with_positives`...) are averaged into each log.
    Target classes are drawn in `forward` with torch's global generator, which `Trainer` seeds (`args.seed`) and
    checkpoints, so a resumed run draws the same pairs.

    Args:
        model (`HydraModel`): the model.
        args (`HydraTrainingArguments`, *optional*): training arguments.
        train_dataset (`Any`, *optional*): rows with an image and a class.
        eval_dataset (`Any`, *optional*): the same, for evaluation.
        data_collator (`Any`, *optional*): defaults to `HydraImageCollator.from_config(model.config)`.
    """

    def __init__(
        self,
        model: HydraModel | None = None,
        args: TrainingArguments | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        data_collator: Any = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(model, HydraModel):
            raise TypeError(f"HydraTrainer needs a HydraModel, got {type(model).__name__}.")
        if kwargs.get("peft_config") is not None:
            raise ValueError("HydraTrainer trains the backbone in full; LoRA (peft_config) is not supported.")
        kwargs.pop("peft_config", None)
        args = args if args is not None else HydraTrainingArguments(output_dir="hydra-output")
        require_rows(train_dataset, name="train_dataset", owner=type(self).__name__)
        require_rows(eval_dataset, name="eval_dataset", owner=type(self).__name__)
        kwargs.setdefault("compute_metrics", probe_metrics)
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            data_collator=data_collator or HydraImageCollator.from_config(model.config),
            **kwargs,
        )
        self._components: dict[str, list[float]] = defaultdict(list)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if inputs.get("labels") is None:
            raise ValueError(
                "HydraTrainer needs class labels in every batch (a 'labels' entry from the collator)."
            )
        outputs = model(**inputs)
        if model.training:
            components = self.accelerator.unwrap_model(model).last_loss_components
            for key, value in components.items():
                self._components[key].append(float(value))
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._components:
            for key, values in self._components.items():
                logs[key] = round(sum(values) / len(values), 6)
            self._components.clear()
        super().log(logs, start_time)


register_auto_classes(HydraConfig, HydraModel)
