"""PixPro (Xie et al. 2021, "Propagate Yourself"): pixel-level consistency between two crops of an image, for
dense features (detection, segmentation).

Two augmented crops of each image are taken with their geometry kept ([`hf_contrastive.vision.dense.features`]). The
backbone's feature map ([`spatial_features`]: ConvNeXt, ResNet, ViT patch tokens...) goes through a 1x1-conv
projector; a momentum (EMA) copy of backbone and projector gives the targets `x'`. Cells `i` of view A and `j`
of view B are a positive pair when their centres, mapped back to the image, lie closer than 0.7 of the larger
bin diagonal ([`positive_pairs`]). The pixel propagation module (PPM) smooths the online projections,

    y_i = sum_j max(cos(x_i, x_j), 0)^gamma * n(g(x_j)),

with `g` 0, 1 (the paper's default) or 2 1x1-conv layers, and the pixel-to-propagation consistency loss is

    L_pixpro = -mean over positive pairs (i, j) of [cos(y_i, x'_j) + cos(y_j, x'_i)].

Optional terms: PixContrast, a pixel-level InfoNCE ([`PixProLoss`], `pixcontrast_weight`), and an instance
branch, BYOL's projector and predictor on the average-pooled features (`instance_weight`, 0 by default). The
momentum rises on a cosine schedule from 0.99 to 1 over training ([`cosine_momentum`]); [`PixProTrainer`]
updates the momentum copy after every optimiser step.

What this module settles where the specification or the code leaves a choice (readings, not the paper's
stated method):

- the consistency loss is averaged per image over its positive pairs, then over the images that have at least
  one (the reference code divides by `positives + 1e-6`, so such images count as zero); images without a
  positive pair are skipped and counted (`skipped_images`), and a batch with none gives a zero loss that keeps
  its graph, with a logged warning, never NaN. The scale is the specification's (`-cos - cos`, in `[-2, 2]`);
  the reference code multiplies each direction by 2, which only rescales the gradient;
- PixContrast (not in the released code; temperature 0.3 unverified): each online projected cell of view A
  that has a positive is a query against the momentum cells of view B of every image of the batch; its
  positives are its geometric positives, every other cell (beyond the threshold, or of another image) is a
  negative; multi-positive InfoNCE `-log(sum_pos exp(s / t) / sum_all exp(s / t))`, both directions averaged;
- instance branch (weight unverified, 0 by default): `Linear -> BatchNorm1d -> ReLU -> Linear` projector and
  predictor (hidden `instance_hidden_size`), on the average-pooled backbone map; loss
  `-mean[cos(p_A, z'_B) + cos(p_B, z'_A)]`, the same scale as the pixel term;
- the momentum copy holds backbone, projector (and instance projector); its parameters follow
  `k <- m k + (1 - m) q` (`hf_contrastive.core.momentum.MomentumEncoder`, which also copies the buffers, so
  BatchNorm running statistics follow the online network); it runs in the same train / eval mode as the model
  and is saved with it, so `from_pretrained` resumes exactly;
- the two views go through the backbone in two separate passes (per-view BatchNorm statistics, as the
  reference code does).

Several processes (DDP): every term is computed on the local batch (PixContrast's negatives are this process's
cells; nothing is gathered) and DDP averages the gradients, so the run matches one process on the whole batch
when the processes keep equally many images with positive pairs, as the reference code (which also averages
per process) does.
"""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    PretrainedConfig,
    PreTrainedModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.utils import ModelOutput

from hf_contrastive.core.checkpoint import AtomicCheckpointMixin
from hf_contrastive.core.configuration import backbone_hidden_size, register_auto_classes
from hf_contrastive.core.data.checks import require_rows
from hf_contrastive.core.engines import EngineMixin
from hf_contrastive.core.hub.card import ModelCardInfo
from hf_contrastive.core.hub.mixin import HubMixin
from hf_contrastive.core.losses.base import ContrastiveLoss, LossOutput, upcast
from hf_contrastive.core.momentum import MomentumEncoder
from hf_contrastive.vision.augment import IMAGENET_MEAN, IMAGENET_STD
from hf_contrastive.vision.dense.features import (
    DEFAULT_POSITIVE_THRESHOLD,
    TwoViewTransform,
    geometry_tensor,
    positive_pairs,
    spatial_features,
)
from hf_contrastive.vision.modeling import load_image

logger = logging.getLogger(__name__)

__all__ = [
    "PIXPRO_CITATION",
    "PixProCollator",
    "PixProConfig",
    "PixProLoss",
    "PixProModel",
    "PixProOutput",
    "PixProTrainer",
    "PixProTrainingArguments",
    "PixelPropagation",
    "cosine_momentum",
    "dense_feature_size",
    "pixel_propagation",
]

PIXPRO_CITATION = """@inproceedings{xie2021propagate,
  title     = {Propagate Yourself: Exploring Pixel-Level Consistency for Unsupervised Visual Representation Learning},
  author    = {Xie, Zhenda and Lin, Yutong and Zhang, Zheng and Cao, Yue and Lin, Stephen and Hu, Han},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {16684--16693},
  year      = {2021}
}"""


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _finite(name: str, value: Any, low: float | None = None, strict: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if strict else value >= low
    if not ok:
        bound = "" if low is None else f" {'>' if strict else '>='} {low:g}"
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}.")
    return float(value)


def dense_feature_size(backbone_config: Any) -> int:
    """Channels of a vision backbone's feature map: `hidden_sizes[-1]` for convolutional families (ResNet,
    ConvNeXt), `hidden_size` for token backbones (ViT, DINOv2, Swin's last stage).

    Args:
        backbone_config (`PretrainedConfig`): the backbone's configuration.
    """
    sizes = getattr(backbone_config, "hidden_sizes", None)
    if isinstance(sizes, (list, tuple)) and sizes and isinstance(sizes[-1], int):
        return int(sizes[-1])
    return backbone_hidden_size(backbone_config, "PixProConfig")


def cosine_momentum(step: int, total_steps: int, base: float = 0.99) -> float:
    """PixPro's momentum schedule: `1 - (1 - base) * (cos(pi * step / total_steps) + 1) / 2`.

    It is `base` at step 0 and rises to 1 at `total_steps` (steps beyond are clamped).

    Args:
        step (`int`): optimiser steps done.
        total_steps (`int`): optimiser steps of the whole run, `> 0`.
        base (`float`, *optional*, defaults to `0.99`): the momentum at the start, in `[0, 1)`.
    """
    if not isinstance(total_steps, int) or isinstance(total_steps, bool) or total_steps < 1:
        raise ValueError(f"cosine_momentum: total_steps must be an int >= 1, got {total_steps!r}.")
    if not (isinstance(base, (int, float)) and 0.0 <= base < 1.0):
        raise ValueError(f"cosine_momentum: base must be in [0, 1), got {base!r}.")
    progress = min(max(int(step), 0), total_steps) / total_steps
    return 1.0 - (1.0 - float(base)) * (math.cos(math.pi * progress) + 1.0) / 2.0


# -- configuration ---------------------------------------------------------------------------------------


class PixProConfig(PretrainedConfig):
    r"""Configuration of [`PixProModel`]: a vision backbone, the 1x1-conv projector, the pixel propagation module,
    the momentum schedule and the loss terms. Defaults are the paper's (Xie et al. 2021) where it gives them.

    Args:
        backbone_config (`PretrainedConfig` or `dict`, *optional*): configuration of the `AutoModel` vision
            backbone (a dict needs `model_type`); it must return a feature map or patch tokens.
        projector_hidden_size (`int`, *optional*, defaults to `4096`): hidden channels of the projector
            (`Conv1x1 -> BatchNorm2d -> ReLU -> Conv1x1`).
        projection_dim (`int`, *optional*, defaults to `256`): output channels of the projector.
        ppm_gamma (`float`, *optional*, defaults to `2.0`): sharpness `gamma` of the propagation similarity, `> 0`.
        ppm_transform_layers (`int`, *optional*, defaults to `1`): layers of the value transform `g`: 0
            (identity), 1 (one 1x1 conv) or 2 (`Conv1x1 -> BatchNorm2d -> ReLU -> Conv1x1`).
        momentum_base (`float`, *optional*, defaults to `0.99`): momentum at the start of the cosine schedule.
        positive_threshold (`float`, *optional*, defaults to `0.7`): positive-pair threshold on the centre
            distance over the larger bin diagonal.
        pixpro_weight (`float`, *optional*, defaults to `1.0`): weight of the pixel-to-propagation loss.
        pixcontrast_weight (`float`, *optional*, defaults to `0.0`): weight of PixContrast (pixel InfoNCE).
        pixcontrast_temperature (`float`, *optional*, defaults to `0.3`): PixContrast's temperature (unverified).
        instance_weight (`float`, *optional*, defaults to `0.0`): weight of the instance branch; with `0` the
            branch is not built.
        instance_hidden_size (`int`, *optional*, defaults to `4096`): hidden width of the instance projector and
            predictor.
        instance_dim (`int`, *optional*, defaults to `256`): output width of the instance projector and predictor.
        image_size (`int`, *optional*): side of the square views (default: the backbone's `image_size`, else 224).
        crop_scale (`tuple[float, float]`, *optional*, defaults to `(0.08, 1.0)`): area range of the crops.
        image_mean (`list[float]`, *optional*, defaults to ImageNet's): per-channel normalisation mean.
        image_std (`list[float]`, *optional*, defaults to ImageNet's): per-channel normalisation deviation.
        initializer_range (`float`, *optional*, defaults to `0.02`): standard deviation of the head's weights at
            initialisation.
    """

    model_type = "pixpro_encoder"
    sub_configs = {"backbone_config": AutoConfig}
    keys_to_ignore_at_inference = [
        "feature_map",
        "projected",
        "propagated",
        "positives",
        "pixpro_loss",
        "pixcontrast_loss",
        "instance_loss",
    ]

    def __init__(
        self,
        backbone_config: PretrainedConfig | dict[str, Any] | None = None,
        projector_hidden_size: int = 4096,
        projection_dim: int = 256,
        ppm_gamma: float = 2.0,
        ppm_transform_layers: int = 1,
        momentum_base: float = 0.99,
        positive_threshold: float = DEFAULT_POSITIVE_THRESHOLD,
        pixpro_weight: float = 1.0,
        pixcontrast_weight: float = 0.0,
        pixcontrast_temperature: float = 0.3,
        instance_weight: float = 0.0,
        instance_hidden_size: int = 4096,
        instance_dim: int = 256,
        image_size: int | None = None,
        crop_scale: Sequence[float] = (0.08, 1.0),
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        initializer_range: float = 0.02,
        **kwargs: Any,
    ) -> None:
        if isinstance(backbone_config, dict):
            if "model_type" not in backbone_config:
                raise ValueError(
                    "backbone_config dict needs a 'model_type' key (e.g. 'convnext', 'resnet', 'vit')."
                )
            backbone_config = AutoConfig.for_model(**backbone_config)
        if ppm_transform_layers not in (0, 1, 2) or isinstance(ppm_transform_layers, bool):
            raise ValueError(f"ppm_transform_layers must be 0, 1 or 2, got {ppm_transform_layers!r}.")
        if not (isinstance(momentum_base, (int, float)) and 0.0 <= momentum_base < 1.0):
            raise ValueError(f"momentum_base must be in [0, 1), got {momentum_base!r}.")
        weights = {
            "pixpro_weight": _finite("pixpro_weight", pixpro_weight, 0.0),
            "pixcontrast_weight": _finite("pixcontrast_weight", pixcontrast_weight, 0.0),
            "instance_weight": _finite("instance_weight", instance_weight, 0.0),
        }
        if not any(weights.values()):
            raise ValueError(f"At least one loss weight must be > 0, got {weights}.")
        if image_size is None:
            image_size = getattr(backbone_config, "image_size", None)
            image_size = (
                image_size if isinstance(image_size, int) and not isinstance(image_size, bool) else 224
            )
        crop_scale = [float(v) for v in crop_scale]
        if len(crop_scale) != 2 or not (0.0 < crop_scale[0] <= crop_scale[1] <= 1.0):
            raise ValueError(f"crop_scale must be (min, max) with 0 < min <= max <= 1, got {crop_scale}.")
        image_mean, image_std = [float(v) for v in image_mean], [float(v) for v in image_std]
        if len(image_mean) != 3 or len(image_std) != 3 or any(s <= 0 for s in image_std):
            raise ValueError(
                f"image_mean and image_std need 3 values (std > 0), got {image_mean} and {image_std}."
            )
        self.backbone_config = backbone_config
        self.projector_hidden_size = _positive_int("projector_hidden_size", projector_hidden_size)
        self.projection_dim = _positive_int("projection_dim", projection_dim)
        self.ppm_gamma = _finite("ppm_gamma", ppm_gamma, 0.0, strict=True)
        self.ppm_transform_layers = int(ppm_transform_layers)
        self.momentum_base = float(momentum_base)
        self.positive_threshold = _finite("positive_threshold", positive_threshold, 0.0, strict=True)
        self.pixpro_weight = weights["pixpro_weight"]
        self.pixcontrast_weight = weights["pixcontrast_weight"]
        self.pixcontrast_temperature = _finite(
            "pixcontrast_temperature", pixcontrast_temperature, 0.0, strict=True
        )
        self.instance_weight = weights["instance_weight"]
        self.instance_hidden_size = _positive_int("instance_hidden_size", instance_hidden_size)
        self.instance_dim = _positive_int("instance_dim", instance_dim)
        self.image_size = _positive_int("image_size", image_size)
        self.crop_scale = crop_scale
        self.image_mean = image_mean
        self.image_std = image_std
        self.initializer_range = float(initializer_range)
        super().__init__(**kwargs)

    @property
    def feature_size(self) -> int:
        """Channels of the backbone's feature map (the projector's input)."""
        if self.backbone_config is None:
            raise ValueError("PixProConfig has no backbone_config.")
        return dense_feature_size(self.backbone_config)


# -- pixel propagation -------------------------------------------------------------------------------------


def pixel_propagation(
    features: torch.Tensor, values: torch.Tensor | None = None, gamma: float = 2.0
) -> torch.Tensor:
    """PixPro's propagation `y_i = sum_j max(cos(x_i, x_j), 0)^gamma * n(v_j)` over the cells of each image.

    Args:
        features (`torch.Tensor`): the projected map `x`, `[B, D, H, W]`.
        values (`torch.Tensor`, *optional*): the transformed map `v = g(x)`, `[B, D, H, W]` (default: `x`).
        gamma (`float`, *optional*, defaults to `2.0`): sharpness, `> 0` (below 1 a `1e-6` is added to the
            similarities before the power, as the reference code does, so the gradient stays finite).

    Returns:
        `torch.Tensor`: `[B, D, H, W]`.
    """
    if features.dim() != 4:
        raise ValueError(f"pixel_propagation: features must be [B, D, H, W], got {tuple(features.shape)}.")
    values = features if values is None else values
    batch, dim, height, width = features.shape
    x = F.normalize(features.flatten(2), dim=1)  # [B, D, N]
    v = F.normalize(values.flatten(2), dim=1)  # [B, D', N]
    similarity = torch.bmm(x.transpose(1, 2), x).clamp(min=0.0)  # [B, N_i, N_j]
    if gamma < 1.0:
        similarity = similarity + 1e-6
    similarity = similarity.pow(gamma)
    out = torch.bmm(v, similarity.transpose(1, 2))  # [B, D', N_i]
    return out.reshape(batch, values.shape[1], height, width)


class PixelPropagation(nn.Module):
    """The pixel propagation module: value transform `g` (0, 1 or 2 1x1-conv layers), then [`pixel_propagation`].

    Args:
        dim (`int`): channels of the projected map.
        gamma (`float`, *optional*, defaults to `2.0`): sharpness of the similarity.
        transform_layers (`int`, *optional*, defaults to `1`): layers of `g`.
    """

    def __init__(self, dim: int, gamma: float = 2.0, transform_layers: int = 1) -> None:
        super().__init__()
        self.gamma = float(gamma)
        if transform_layers == 0:
            self.transform: nn.Module = nn.Identity()
        elif transform_layers == 1:
            self.transform = nn.Conv2d(dim, dim, kernel_size=1)
        elif transform_layers == 2:
            self.transform = nn.Sequential(
                nn.Conv2d(dim, dim, kernel_size=1),
                nn.BatchNorm2d(dim),
                nn.ReLU(inplace=True),
                nn.Conv2d(dim, dim, kernel_size=1),
            )
        else:
            raise ValueError(f"transform_layers must be 0, 1 or 2, got {transform_layers!r}.")

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return pixel_propagation(features, self.transform(features), self.gamma)


def _conv_projector(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_dim, hidden, kernel_size=1),
        nn.BatchNorm2d(hidden),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden, out_dim, kernel_size=1),
    )


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)
    )


# -- loss ------------------------------------------------------------------------------------------------


def _cells(name: str, tensor: torch.Tensor, owner: str) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point() or tensor.dim() != 3:
        shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise ValueError(f"{owner}: {name} must be a float tensor [B, N, D] (cells x channels), got {shape}.")
    return tensor


class PixProLoss(ContrastiveLoss):
    r"""PixPro's objective (Xie et al. 2021): pixel-to-propagation consistency, with optional PixContrast and
    instance terms.

    `loss = pixpro_weight * L_pixpro + pixcontrast_weight * L_pixcontrast + instance_weight * L_instance`, with

    - `L_pixpro = mean_images -[mean_{(i, j) positive} cos(y^A_i, x'^B_j) + cos(y^B_j, x'^A_i)]`, over the images
      with at least one positive pair (the others are skipped and counted);
    - `L_pixcontrast`: multi-positive InfoNCE of the online cells (no propagation) against the momentum cells of
      the other view of every image in the batch, temperature `pixcontrast_temperature` (see the module
      docstring for the reading);
    - `L_instance = -mean_b [cos(p^A_b, z'^B_b) + cos(p^B_b, z'^A_b)]` (BYOL's predictor outputs `p` against the
      momentum projections `z'`).

    Targets (`x'`, `z'`) are detached here.

    | input | shape |
    |---|---|
    | `propagated_a`, `propagated_b` | `[B, N_a, D]`, `[B, N_b, D]`: PPM outputs `y` of each view |
    | `target_a`, `target_b` | `[B, N_a, D]`, `[B, N_b, D]`: momentum projections `x'` |
    | `positives` | `[B, N_a, N_b]` bool: positive cell pairs (A to B) |
    | `projected_a`, `projected_b` | optional, `[B, N, D]`: online projections (PixContrast) |
    | `instance_pred_a`, ..., `instance_target_b` | optional, `[B, D']`: instance branch |

    Components: `pixpro`, `pixcontrast`, `instance` (the weighted terms present), `images_with_positives`,
    `skipped_images`, `positive_pairs_per_image`.

    Args:
        pixpro_weight (`float`, *optional*, defaults to `1.0`): weight of the consistency term.
        pixcontrast_weight (`float`, *optional*, defaults to `0.0`): weight of PixContrast.
        pixcontrast_temperature (`float`, *optional*, defaults to `0.3`): PixContrast's temperature (unverified).
        instance_weight (`float`, *optional*, defaults to `0.0`): weight of the instance term.

    Example::

        loss = PixProLoss()(y_a, y_b, target_a, target_b, positive_pairs(geom_a, geom_b, (7, 7)))
    """

    citation = PIXPRO_CITATION

    def __init__(
        self,
        pixpro_weight: float = 1.0,
        pixcontrast_weight: float = 0.0,
        pixcontrast_temperature: float = 0.3,
        instance_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.pixpro_weight = _finite("pixpro_weight", pixpro_weight, 0.0)
        self.pixcontrast_weight = _finite("pixcontrast_weight", pixcontrast_weight, 0.0)
        self.pixcontrast_temperature = _finite("pixcontrast_temperature", pixcontrast_temperature, 0.0, True)
        self.instance_weight = _finite("instance_weight", instance_weight, 0.0)
        if not (self.pixpro_weight or self.pixcontrast_weight or self.instance_weight):
            raise ValueError("PixProLoss: at least one of the three weights must be > 0.")

    @classmethod
    def from_config(cls, config: PixProConfig) -> PixProLoss:
        """The loss of a [`PixProConfig`]."""
        return cls(
            pixpro_weight=config.pixpro_weight,
            pixcontrast_weight=config.pixcontrast_weight,
            pixcontrast_temperature=config.pixcontrast_temperature,
            instance_weight=config.instance_weight,
        )

    def config_dict(self) -> dict[str, Any]:
        return {
            "pixpro_weight": self.pixpro_weight,
            "pixcontrast_weight": self.pixcontrast_weight,
            "pixcontrast_temperature": self.pixcontrast_temperature,
            "instance_weight": self.instance_weight,
        }

    @staticmethod
    def _consistency(
        propagated: torch.Tensor, target: torch.Tensor, positives: torch.Tensor, counts: torch.Tensor
    ) -> torch.Tensor:
        """Per image: mean over positive pairs of `cos(propagated_i, target_j)`; `[B]` (0 where no pair)."""
        cos = torch.bmm(F.normalize(propagated, dim=-1), F.normalize(target.detach(), dim=-1).transpose(1, 2))
        return (cos * positives).sum(dim=(1, 2)) / counts.clamp(min=1)

    def _pixcontrast(
        self, query: torch.Tensor, keys: torch.Tensor, positives: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum of the multi-positive InfoNCE over the queries with a positive, and their number."""
        batch, n_q, _ = query.shape
        n_k = keys.shape[1]
        q = F.normalize(query, dim=-1).reshape(batch * n_q, -1)
        k = F.normalize(keys.detach(), dim=-1).reshape(batch * n_k, -1)
        logits = (q @ k.T) / self.pixcontrast_temperature  # [B * Nq, B * Nk]
        mask = torch.zeros(batch, n_q, batch, n_k, dtype=torch.bool, device=query.device)
        index = torch.arange(batch, device=query.device)
        mask[index, :, index, :] = positives
        mask = mask.reshape(batch * n_q, batch * n_k)
        has = mask.any(dim=1)
        if not bool(has.any()):
            return logits.sum() * 0.0, has.sum()
        logits, mask = logits[has], mask[has]
        positive = torch.logsumexp(logits.masked_fill(~mask, float("-inf")), dim=1)
        return (torch.logsumexp(logits, dim=1) - positive).sum(), has.sum()

    def forward(
        self,
        propagated_a: torch.Tensor,
        propagated_b: torch.Tensor,
        target_a: torch.Tensor,
        target_b: torch.Tensor,
        positives: torch.Tensor,
        projected_a: torch.Tensor | None = None,
        projected_b: torch.Tensor | None = None,
        instance_pred_a: torch.Tensor | None = None,
        instance_pred_b: torch.Tensor | None = None,
        instance_target_a: torch.Tensor | None = None,
        instance_target_b: torch.Tensor | None = None,
    ) -> LossOutput:
        owner = type(self).__name__
        ya, yb = _cells("propagated_a", propagated_a, owner), _cells("propagated_b", propagated_b, owner)
        ta, tb = _cells("target_a", target_a, owner), _cells("target_b", target_b, owner)
        batch, n_a, n_b = ya.shape[0], ya.shape[1], yb.shape[1]
        if ta.shape[:2] != ya.shape[:2] or tb.shape[:2] != yb.shape[:2]:
            raise ValueError(
                f"{owner}: targets must match the propagated maps cell for cell, got propagated "
                f"{tuple(ya.shape)} / {tuple(yb.shape)} and targets {tuple(ta.shape)} / {tuple(tb.shape)}."
            )
        if not isinstance(positives, torch.Tensor) or tuple(positives.shape) != (batch, n_a, n_b):
            shape = (
                tuple(positives.shape) if isinstance(positives, torch.Tensor) else type(positives).__name__
            )
            raise ValueError(
                f"{owner}: positives must be a bool tensor [{batch}, {n_a}, {n_b}], got {shape}."
            )
        self._check_finite(propagated_a=ya, propagated_b=yb, target_a=ta, target_b=tb)
        positives = positives.to(device=ya.device, dtype=torch.bool)
        counts = positives.sum(dim=(1, 2))  # [B]
        kept = counts > 0
        n_kept = kept.sum()
        components: dict[str, torch.Tensor] = {}
        # A zero that keeps the graph of every input (a batch without positive pairs still back-propagates).
        loss = (ya.sum() + yb.sum()) * 0.0
        if self.pixpro_weight:
            pos = positives.to(ya.dtype)
            per_image = self._consistency(ya, tb, pos, counts) + self._consistency(
                yb, ta, pos.transpose(1, 2), counts
            )
            pixpro = -(per_image * kept).sum() / n_kept.clamp(min=1)
            loss = loss + self.pixpro_weight * pixpro
            components["pixpro"] = pixpro.detach()
        if self.pixcontrast_weight:
            if projected_a is None or projected_b is None:
                raise ValueError(f"{owner}: pixcontrast_weight > 0 needs projected_a and projected_b.")
            xa, xb = _cells("projected_a", projected_a, owner), _cells("projected_b", projected_b, owner)
            sum_ab, n_ab = self._pixcontrast(xa, tb, positives)
            sum_ba, n_ba = self._pixcontrast(xb, ta, positives.transpose(1, 2))
            pixcontrast = (sum_ab + sum_ba) / (n_ab + n_ba).clamp(min=1)
            loss = loss + self.pixcontrast_weight * pixcontrast + (xa.sum() + xb.sum()) * 0.0
            components["pixcontrast"] = pixcontrast.detach()
        if self.instance_weight:
            parts = (instance_pred_a, instance_pred_b, instance_target_a, instance_target_b)
            if any(p is None for p in parts):
                raise ValueError(
                    f"{owner}: instance_weight > 0 needs instance_pred_a/_b and instance_target_a/_b."
                )
            pa, pb, za, zb = parts
            instance = -(
                F.cosine_similarity(pa, zb.detach(), dim=-1) + F.cosine_similarity(pb, za.detach(), dim=-1)
            ).mean()
            loss = loss + self.instance_weight * instance
            components["instance"] = instance.detach()
        skipped = batch - n_kept
        if int(n_kept) == 0 and (self.pixpro_weight or self.pixcontrast_weight):
            logger.warning(
                "PixProLoss: none of the %d image(s) of this batch has a positive cell pair (the two crops do not "
                "overlap at this grid); their pixel terms are skipped.",
                batch,
            )
        components["images_with_positives"] = n_kept.detach().to(ya.dtype)
        components["skipped_images"] = skipped.detach().to(ya.dtype)
        components["positive_pairs_per_image"] = (
            counts[kept].to(ya.dtype).mean()
            if int(n_kept)
            else torch.zeros((), dtype=ya.dtype, device=ya.device)
        ).detach()
        return LossOutput(loss, components)


# -- the model -------------------------------------------------------------------------------------------


@dataclass
class PixProOutput(ModelOutput):
    """Output of [`PixProModel`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): the weighted PixPro objective, with two views.
        feature_map (`torch.FloatTensor` of shape `(batch_size, channels, height, width)`): the backbone's feature
            map of `pixel_values` (the dense representation evaluated downstream).
        projected (`torch.FloatTensor` of shape `(batch_size, projection_dim, height, width)`): the projector's map.
        propagated (`torch.FloatTensor` of shape `(batch_size, projection_dim, height, width)`, *optional*): the PPM
            output, with two views.
        positives (`torch.BoolTensor` of shape `(batch_size, cells, cells)`, *optional*): positive cell pairs.
        pixpro_loss (`torch.FloatTensor` of shape `()`, *optional*): the consistency term (detached).
        pixcontrast_loss (`torch.FloatTensor` of shape `()`, *optional*): PixContrast (detached).
        instance_loss (`torch.FloatTensor` of shape `()`, *optional*): the instance term (detached).
    """

    loss: torch.FloatTensor | None = None
    feature_map: torch.FloatTensor | None = None
    projected: torch.FloatTensor | None = None
    propagated: torch.FloatTensor | None = None
    positives: torch.BoolTensor | None = None
    pixpro_loss: torch.FloatTensor | None = None
    pixcontrast_loss: torch.FloatTensor | None = None
    instance_loss: torch.FloatTensor | None = None


class PixProPreTrainedModel(PreTrainedModel):
    """Base of [`PixProModel`]: its config class, weight initialisation and input name."""

    config_class = PixProConfig
    base_model_prefix = "backbone"
    main_input_name = "pixel_values"
    # The loss is a mean over images, not over items: Trainer divides it by the accumulation steps itself.
    accepts_loss_kwargs = False
    supports_gradient_checkpointing = True

    def _init_weights(self, module: nn.Module) -> None:
        # Conv, linear and BatchNorm layers of the head: transformers' defaults at `initializer_range`; the
        # backbone initialises (or loads) itself, and the momentum copy is set equal to the online network.
        if isinstance(module, PixProModel):
            return
        super()._init_weights(module)


class PixProModel(HubMixin, PixProPreTrainedModel):
    r"""PixPro (Xie et al. 2021): a vision backbone trained for pixel-level consistency between two crops.

    The backbone is any transformers vision model with a spatial output (see [`spatial_features`]). Called with
    `pixel_values` alone, `forward` returns the feature map and its projection; with a second view
    (`pixel_values_b`) and both views' geometries (`geometry_a`, `geometry_b`: `[B, 5]` tensors or
    [`ViewGeometry`] lists, from [`PixProCollator`]), it also computes the [`PixProLoss`].

    The momentum copy (`momentum_encoder`) is updated by [`momentum_update`] (the trainer calls it after every
    optimiser step with the momentum of [`cosine_momentum`]).

    Example::

        >>> from transformers import ConvNextConfig
        >>> model = PixProModel.from_backbone(ConvNextConfig(hidden_sizes=[16, 32], depths=[1, 1], num_stages=2),
        ...     projector_hidden_size=64, projection_dim=32)
        >>> batch = PixProCollator.from_config(model.config)([{"image": "a.jpg"}, {"image": "b.jpg"}])
        >>> model(**batch).loss.backward()
    """

    card_template = "pixpro_encoder.md"
    card_pipeline_tag = "image-feature-extraction"
    card_tags = ("image-feature-extraction", "contrastive-learning", "dense-features", "pixpro")
    card_citations = (PIXPRO_CITATION,)

    def __init__(self, config: PixProConfig, backbone: PreTrainedModel | None = None) -> None:
        super().__init__(config)
        if config.backbone_config is None:
            raise ValueError("PixProConfig.backbone_config is required to build a PixProModel.")
        self.backbone = backbone if backbone is not None else AutoModel.from_config(config.backbone_config)
        if getattr(self.backbone.config, "_attn_implementation", "eager") is None:
            self.backbone.config._attn_implementation = (
                "sdpa" if getattr(self.backbone, "_supports_sdpa", False) else "eager"
            )
        width = config.feature_size
        self.projector = _conv_projector(width, config.projector_hidden_size, config.projection_dim)
        self.ppm = PixelPropagation(config.projection_dim, config.ppm_gamma, config.ppm_transform_layers)
        if config.instance_weight > 0:
            self.instance_projector: nn.Module | None = _mlp(
                width, config.instance_hidden_size, config.instance_dim
            )
            self.instance_predictor: nn.Module | None = _mlp(
                config.instance_dim, config.instance_hidden_size, config.instance_dim
            )
        else:
            self.instance_projector = None
            self.instance_predictor = None
        self.momentum_encoder = MomentumEncoder(self._online(), momentum=config.momentum_base)
        self.card_info = ModelCardInfo()
        self.post_init()
        self.reset_momentum_encoder()

    # -- construction --------------------------------------------------------------------------------------
    @classmethod
    def from_backbone(
        cls,
        backbone: str | os.PathLike | PretrainedConfig | PreTrainedModel,
        backbone_kwargs: Mapping[str, Any] | None = None,
        **config_kwargs: Any,
    ) -> PixProModel:
        """A new PixPro head on a vision backbone.

        Args:
            backbone (`str | os.PathLike | PretrainedConfig | PreTrainedModel`): a folder or Hub id (weights loaded
                with `AutoModel.from_pretrained`), a config (random initialisation) or a built model.
            backbone_kwargs (`Mapping[str, Any]`, *optional*): loading options of `AutoModel.from_pretrained`.
            config_kwargs (`Any`): [`PixProConfig`] settings.
        """
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
        if backbone_kwargs and source is None:
            raise ValueError("backbone_kwargs are loading options; they apply only when backbone is a path.")
        config = PixProConfig(backbone_config=model_backbone.config, **config_kwargs)
        model = cls(config, backbone=model_backbone)
        if source is not None and not os.path.exists(source):
            model.card_info.base_model = source
        return model

    def _online(self) -> nn.ModuleDict:
        """The online modules that have a momentum copy (a fresh container; the modules are the model's)."""
        modules: dict[str, nn.Module] = {"backbone": self.backbone, "projector": self.projector}
        if self.instance_projector is not None:
            modules["instance_projector"] = self.instance_projector
        return nn.ModuleDict(modules)

    @torch.no_grad()
    def reset_momentum_encoder(self) -> None:
        """Set the momentum copy equal to the online network (done at construction)."""
        self.momentum_encoder.encoder.load_state_dict(self._online().state_dict())

    @torch.no_grad()
    def momentum_update(self, momentum: float) -> None:
        """`k <- m k + (1 - m) q` for the momentum copy's parameters (buffers are copied).

        Args:
            momentum (`float`): `m`, in `[0, 1]` (1 leaves the copy unchanged).
        """
        if not (isinstance(momentum, (int, float)) and 0.0 <= momentum <= 1.0):
            raise ValueError(f"momentum must be in [0, 1], got {momentum!r}.")
        self.momentum_encoder.momentum = float(momentum)
        self.momentum_encoder.update(self._online())

    # -- forward ---------------------------------------------------------------------------------------
    def dense_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The backbone's feature map `[B, C, H, W]` (see [`spatial_features`])."""
        return spatial_features(self.backbone, pixel_values)

    def _branch(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        fmap = self.dense_features(pixel_values)
        if fmap.shape[1] != self.config.feature_size:
            raise ValueError(
                f"{type(self).__name__}: the backbone's feature map has {fmap.shape[1]} channels, the head was "
                f"built for {self.config.feature_size} (PixProConfig.feature_size)."
            )
        out = {"feature_map": fmap, "projected": self.projector(fmap)}
        if self.instance_projector is not None:
            out["instance"] = self.instance_predictor(self.instance_projector(fmap.mean(dim=(2, 3))))
        return out

    @torch.no_grad()
    def _momentum_branch(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        modules = self.momentum_encoder.encoder
        modules.train(self.training)
        fmap = spatial_features(modules["backbone"], pixel_values)
        out = {"projected": modules["projector"](fmap)}
        if "instance_projector" in modules:
            out["instance"] = modules["instance_projector"](fmap.mean(dim=(2, 3)))
        return out

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        pixel_values_b: torch.Tensor | None = None,
        geometry_a: Any = None,
        geometry_b: Any = None,
        return_loss: bool = True,
        return_dict: bool | None = None,
    ) -> PixProOutput:
        r"""Feature map of `pixel_values`; with a second view and the geometries, the PixPro loss.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`): the (first) views.
            pixel_values_b (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`, *optional*): the second
                views of the same images.
            geometry_a (`torch.Tensor` of shape `(batch_size, 5)` or `list[ViewGeometry]`, *optional*): crop boxes
                and flips of the first views (see [`ViewGeometry`]).
            geometry_b (`torch.Tensor` of shape `(batch_size, 5)` or `list[ViewGeometry]`, *optional*): the same for
                the second views.
            return_loss (`bool`, *optional*, defaults to `True`): compute the loss when two views are given.
            return_dict (`bool`, *optional*): accepted for `Trainer`; the output is always a [`PixProOutput`].
        """
        owner = type(self).__name__
        if pixel_values is None:
            raise ValueError(f"{owner}.forward needs pixel_values.")
        for name, value in (("pixel_values", pixel_values), ("pixel_values_b", pixel_values_b)):
            if value is not None and (not isinstance(value, torch.Tensor) or value.dim() != 4):
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(f"{owner}: {name} must have shape [B, C, H, W], got {shape}.")
        if pixel_values_b is not None and pixel_values_b.shape[0] != pixel_values.shape[0]:
            raise ValueError(
                f"{owner}: the two views hold {pixel_values.shape[0]} and {pixel_values_b.shape[0]} images."
            )
        online_a = self._branch(pixel_values)
        output = PixProOutput(feature_map=online_a["feature_map"], projected=online_a["projected"])
        if pixel_values_b is None or not return_loss:
            return output
        if geometry_a is None or geometry_b is None:
            raise ValueError(
                f"{owner}: the loss needs both views' geometries (geometry_a, geometry_b), as PixProCollator gives."
            )
        online_b = self._branch(pixel_values_b)
        target_a = self._momentum_branch(pixel_values)
        target_b = self._momentum_branch(pixel_values_b)
        za, zb = online_a["projected"], online_b["projected"]
        positives = positive_pairs(
            geometry_tensor(geometry_a),
            geometry_tensor(geometry_b),
            tuple(za.shape[-2:]),
            self.config.positive_threshold,
            grid_hw_b=tuple(zb.shape[-2:]),
        ).to(za.device)
        if positives.shape[0] != za.shape[0]:
            raise ValueError(f"{owner}: got {positives.shape[0]} geometries for {za.shape[0]} images.")
        # half precision loses the similarity powers: propagate in float32 (float64 stays)
        ya, yb = self.ppm(upcast(za)), self.ppm(upcast(zb))

        def cells(t: torch.Tensor) -> torch.Tensor:
            return t.flatten(2).transpose(1, 2)

        result = PixProLoss.from_config(self.config)(
            cells(ya),
            cells(yb),
            cells(target_a["projected"]),
            cells(target_b["projected"]),
            positives,
            projected_a=cells(za),
            projected_b=cells(zb),
            instance_pred_a=online_a.get("instance"),
            instance_pred_b=online_b.get("instance"),
            instance_target_a=target_a.get("instance"),
            instance_target_b=target_b.get("instance"),
        )
        output.loss = result.loss
        output.propagated = ya
        output.positives = positives
        output.pixpro_loss = result.components.get("pixpro")
        output.pixcontrast_loss = result.components.get("pixcontrast")
        output.instance_loss = result.components.get("instance")
        self.__dict__["_last_components"] = result.components
        return output

    @property
    def last_loss_components(self) -> dict[str, torch.Tensor]:
        """The named loss terms of the latest `forward` with two views (for logging)."""
        return dict(self.__dict__.get("_last_components", {}))

    # -- model card ------------------------------------------------------------------------------------
    def card_details(self) -> dict[str, Any]:
        """Settings of the head for `model_cards/pixpro_encoder.md`."""
        config = self.config
        backbone_type = getattr(config.backbone_config, "model_type", None)
        terms = [f"pixel propagation consistency x {config.pixpro_weight:g}"] if config.pixpro_weight else []
        if config.pixcontrast_weight:
            terms.append(
                f"PixContrast (temperature {config.pixcontrast_temperature:g}) x {config.pixcontrast_weight:g}"
            )
        if config.instance_weight:
            terms.append(f"instance branch (BYOL) x {config.instance_weight:g}")
        return {
            "title": f"PixPro {backbone_type or 'vision'} encoder",
            "description": (
                f"A `{backbone_type}` image encoder trained with PixPro (pixel-level consistency between two crops, "
                "with a momentum encoder and a pixel propagation module), made with hf-contrastive."
            ),
            "backbone_type": backbone_type,
            "architecture": type(self.backbone).__name__,
            "feature_size": config.feature_size,
            "projector_hidden_size": config.projector_hidden_size,
            "projection_dim": config.projection_dim,
            "ppm_gamma": config.ppm_gamma,
            "ppm_transform_layers": config.ppm_transform_layers,
            "momentum_base": config.momentum_base,
            "positive_threshold": config.positive_threshold,
            "objective": " + ".join(terms),
            "crop_scale": config.crop_scale,
            "image_size": config.image_size,
            "image_mean": config.image_mean,
            "image_std": config.image_std,
        }


# -- data ------------------------------------------------------------------------------------------------


class PixProCollator:
    r"""Rows with an image -> two augmented views and their geometries.

    The batch holds `pixel_values` and `pixel_values_b` (`[B, 3, S, S]`) and `geometry_a`, `geometry_b`
    (`[B, 5]`: crop box `x0, y0, x1, y1` in original-image pixels and the flip flag), from a [`TwoViewTransform`]
    (RandomResizedCrop, flip, BYOL's asymmetric colour operations). Draws come from `generator` (torch's
    global generator by default, which `Trainer` seeds).

    Args:
        image_size (`int`, *optional*, defaults to `224`): side of the square views.
        crop_scale (`tuple[float, float]`, *optional*, defaults to `(0.08, 1.0)`): area range of the crops.
        image_mean (`Sequence[float]`, *optional*, defaults to ImageNet's): per-channel mean.
        image_std (`Sequence[float]`, *optional*, defaults to ImageNet's): per-channel deviation.
        image_column (`str`, *optional*, defaults to `"image"`): column of images (path, PIL image, undecoded
            `datasets.Image`).
        photometric (`bool`, *optional*, defaults to `True`): apply BYOL's colour operations.
        generator (`torch.Generator`, *optional*): source of the random draws.
    """

    def __init__(
        self,
        image_size: int = 224,
        crop_scale: Sequence[float] = (0.08, 1.0),
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        image_column: str = "image",
        photometric: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        self.transform = TwoViewTransform(
            _positive_int("image_size", image_size),
            scale=tuple(crop_scale),
            photometric=photometric,
            mean=image_mean,
            std=image_std,
        )
        self.image_column = image_column
        self.generator = generator

    @classmethod
    def from_config(cls, config: PixProConfig, **kwargs: Any) -> PixProCollator:
        """The collator of a [`PixProConfig`]: its image size, crop scale, mean and deviation."""
        settings = {
            "image_size": config.image_size,
            "crop_scale": config.crop_scale,
            "image_mean": config.image_mean,
            "image_std": config.image_std,
        }
        settings.update(kwargs)
        return cls(**settings)

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("PixProCollator got an empty batch.")
        views_a, views_b, geo_a, geo_b = [], [], [], []
        for i, row in enumerate(rows):
            if self.image_column not in row:
                raise ValueError(f"Row {i} has no {self.image_column!r} column (columns: {sorted(row)}).")
            va, vb, ga, gb = self.transform(load_image(row[self.image_column]), self.generator)
            views_a.append(va)
            views_b.append(vb)
            geo_a.append(ga)
            geo_b.append(gb)
        return {
            "pixel_values": torch.stack(views_a),
            "pixel_values_b": torch.stack(views_b),
            "geometry_a": geometry_tensor(geo_a, torch.float32),
            "geometry_b": geometry_tensor(geo_b, torch.float32),
        }


# -- training --------------------------------------------------------------------------------------------


@dataclass
class PixProTrainingArguments(TrainingArguments):
    r"""Training arguments of [`PixProTrainer`]: `TrainingArguments` with the defaults two-view images need.

    Args:
        remove_unused_columns (`bool`, *optional*, defaults to `False`): keep the image column for the collator.
        label_names (`list[str]`, *optional*, defaults to `[]`): no labels (the evaluation loss is the objective).
        report_to (`Any`, *optional*, defaults to `"none"`): loggers.
    """

    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the image column."})
    label_names: list[str] | None = field(default_factory=list, metadata={"help": "Label keys (none)."})
    report_to: Any = field(default="none", metadata={"help": "Loggers."})


class _MomentumStep(TrainerCallback):
    """After every optimiser step: move the momentum copy with the cosine-scheduled momentum."""

    def __init__(self, trainer: PixProTrainer) -> None:
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.momentum_step(state.global_step, state.max_steps)


class PixProTrainer(AtomicCheckpointMixin, EngineMixin, Trainer):
    r"""Trains a [`PixProModel`] with its own loss ([`PixProLoss`], computed in `forward`).

    After every optimiser step the momentum copy moves with `m = cosine_momentum(global_step, max_steps,
    config.momentum_base)` (0.99 rising to 1 over the run). The copy is part of the model, so checkpoints and
    resumes carry it. Batches come from [`PixProCollator`] built from the model's config unless `data_collator`
    is given. Loss components are averaged into each log, except `skipped_images`, summed over the logging
    window (images whose two crops share no positive cell pair); `skipped_images_total` counts the whole run.

    Under FSDP or ZeRO-3 the momentum update would read sharded weights: the engine check refuses it at start.

    Args:
        model (`PixProModel`): the model.
        args (`PixProTrainingArguments`, *optional*): training arguments.
        train_dataset (`Any`, *optional*): rows with an image.
        eval_dataset (`Any`, *optional*): the same, for the evaluation loss.
        data_collator (`Any`, *optional*): defaults to `PixProCollator.from_config(model.config)`.
    """

    def __init__(
        self,
        model: PixProModel | None = None,
        args: TrainingArguments | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        data_collator: Any = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(model, PixProModel):
            raise TypeError(f"PixProTrainer needs a PixProModel, got {type(model).__name__}.")
        if kwargs.get("peft_config") is not None:
            raise ValueError(
                "PixProTrainer trains the backbone in full; LoRA (peft_config) is not supported."
            )
        kwargs.pop("peft_config", None)
        args = args if args is not None else PixProTrainingArguments(output_dir="pixpro-output")
        require_rows(train_dataset, name="train_dataset", owner=type(self).__name__)
        require_rows(eval_dataset, name="eval_dataset", owner=type(self).__name__)
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            data_collator=data_collator or PixProCollator.from_config(model.config),
            **kwargs,
        )
        self.add_callback(_MomentumStep(self))
        self._components: dict[str, list[float]] = defaultdict(list)
        self.skipped_images_total = 0
        self.last_momentum: float | None = None

    def _copies_model_weights(self) -> bool:
        return True

    def _weights_outside_forward(self) -> str:
        return "PixPro's momentum encoder copies the online network's weights after every optimiser step"

    def momentum_step(self, global_step: int, max_steps: int) -> float:
        """Move the momentum copy after optimiser step `global_step` of `max_steps`; returns the momentum used."""
        model = self.accelerator.unwrap_model(self.model)
        momentum = cosine_momentum(global_step, max(int(max_steps), 1), model.config.momentum_base)
        model.momentum_update(momentum)
        self.last_momentum = momentum
        return momentum

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if inputs.get("pixel_values_b") is None:
            raise ValueError(
                "PixProTrainer needs two views per image (pixel_values, pixel_values_b, geometry_a, geometry_b), "
                "as PixProCollator gives."
            )
        outputs = model(**inputs)
        if model.training:
            components = self.accelerator.unwrap_model(model).last_loss_components
            for key, value in components.items():
                self._components[key].append(float(value))
            self.skipped_images_total += int(components.get("skipped_images", 0))
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._components:
            for key, values in self._components.items():
                if key == "skipped_images":
                    logs[key] = float(sum(values))
                else:
                    logs[key] = round(sum(values) / len(values), 6)
            logs["skipped_images_total"] = float(self.skipped_images_total)
            if self.last_momentum is not None:
                logs["momentum"] = self.last_momentum
            self._components.clear()
        super().log(logs, start_time)


register_auto_classes(PixProConfig, PixProModel)
