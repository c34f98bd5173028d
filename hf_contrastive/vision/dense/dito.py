"""DITO (Kim et al. 2023, "Detection-Oriented Image-Text Pretraining for Open-Vocabulary Detection", arXiv
2310.00161, v1): region-level image-text contrast with the detector's architecture on top of the backbone, and
shifted-window learning.

An image goes through a ViT; its patch grid (stride `p`, the patch size) feeds a simple feature pyramid (ViTDet,
Li et al. 2022): P2 and P3 by transposed convolutions (4x and 2x up), P4 the grid itself, P5 a 2x max-pool, each
followed by a 1x1 and a 3x3 convolution with channel LayerNorms. Boxes are pooled from the pyramid by RoI-Align
([`hf_contrastive.vision.dense.roi_align.roi_align`], torchvision semantics, `aligned=True`) and a region head (two
linear layers on the flattened `S x S` features) projects each to the text space. Every region of an image is
contrasted with that image's caption by CLIP's symmetric InfoNCE ([`hf_contrastive.vision.losses.CLIPLoss`]),
next to the usual image-level CLIP term on the mean-pooled grid; there are no pseudo-labels.

Shifted-window learning (verified in the released code, as the specification says): with a window-attention ViT
(transformers' `VitDetModel`, blocks listed in `window_block_indices`), the blocks run twice, once on the patch
grid and once on the grid rolled by `shift_size` cells (half a window by default) along both axes and rolled back
afterwards; the two outputs are averaged before the final LayerNorm. It is applied in training and at inference
alike (a model trained with it is evaluated with it).

What this module settles where the specification leaves a choice:

- **Which boxes are pooled** (unverified in the specification). `box_sampling="per_level"` (default): on every
  pyramid level, the whole-image box plus `num_random_boxes` random boxes, each pooled from that level, so that
  every level is trained; `"assigned"`: the whole-image box plus `num_random_boxes` random boxes per image, each
  pooled from the level the FPN rule assigns it (`canonical_box_size`, `canonical_level` = 224, 4). A random box
  has width and height drawn uniformly in `[random_box_min_size, random_box_max_size]` times the image side and a
  uniform position inside the image (torch's global generator, which `Trainer` seeds). Boxes given to `forward`
  are always pooled at their assigned level.
- **Region term**: the mean over region slots of CLIP losses, each slot (a level and a box index) a `[B, D]`
  batch contrasted with the `B` captions; total `image_loss_weight * L_image + region_loss_weight * L_region`.
- **Boxes outside the image** (given ones): clipped to the image and counted (`model.clipped_boxes`, a logged
  warning); a box with no area left inside the image, or with `x2 <= x1` / `y2 <= y1`, is refused.
- **Backbones**: `VitDetModel` (4-D output, shifted window available); any other tower through
  [`hf_contrastive.vision.dense.features.spatial_features`]: ViT-like models whose tokens (after the leading special
  tokens) form the patch grid, convolutional models whose `last_hidden_state` is a `[B, C, h, w]` map. A tower
  without a spatial output is refused with an error naming what it returned.
- The learnable logit scale starts at `1 / 0.07` and is capped at `logit_scale_max` (100) in the forward pass.
"""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel, Trainer, TrainingArguments
from transformers import initialization as init
from transformers.utils import ModelOutput

from hf_contrastive.core.checkpoint import AtomicCheckpointMixin
from hf_contrastive.core.configuration import backbone_hidden_size, register_auto_classes
from hf_contrastive.core.data.checks import require_rows
from hf_contrastive.core.engines import EngineMixin
from hf_contrastive.core.hub.card import ModelCardInfo
from hf_contrastive.core.hub.mixin import HubMixin
from hf_contrastive.core.losses.base import ContrastiveLoss, LossOutput
from hf_contrastive.embeddings import pool
from hf_contrastive.vision.augment import Compose, eval_transform, global_view_transform
from hf_contrastive.vision.data import ImageTextCollator
from hf_contrastive.vision.dense.features import spatial_features
from hf_contrastive.vision.dense.roi_align import assign_fpn_levels, roi_align
from hf_contrastive.vision.evaluation import image_text_retrieval_metrics
from hf_contrastive.vision.losses import CLIP_CITATION, CLIPLoss
from hf_contrastive.vision.modeling import load_image, tokenize_texts

logger = logging.getLogger(__name__)

__all__ = [
    "BOX_SAMPLING",
    "DITOCollator",
    "DITOConfig",
    "DITOLoss",
    "DITOModel",
    "DITOOutput",
    "DITOTrainer",
    "DITOTrainingArguments",
    "DITO_CITATION",
    "SimpleFeaturePyramid",
    "clip_boxes",
    "dito_retrieval_metrics",
    "sample_boxes",
    "shifted_window_forward",
]

DITO_CITATION = """@article{kim2023dito,
  title   = {Detection-Oriented Image-Text Pretraining for Open-Vocabulary Detection},
  author  = {Kim, Dahun and Angelova, Anelia and Kuo, Weicheng},
  journal = {arXiv preprint arXiv:2310.00161},
  year    = {2023}
}"""

BOX_SAMPLING = ("per_level", "assigned")
TEXT_POOLING = ("mean", "cls")
PYRAMID_LEVELS = (2, 3, 4, 5)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _finite(name: str, value: Any, low: float | None = None, strict: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if strict else value >= low
    if not ok:
        bound = "" if low is None else f" {'>' if strict else '>='} {low}"
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}.")
    return float(value)


def _as_config(name: str, value: Any) -> PretrainedConfig | None:
    if isinstance(value, dict):
        if "model_type" not in value:
            raise ValueError(f"{name} dict needs a 'model_type' key (e.g. 'vitdet', 'bert').")
        return AutoConfig.for_model(**value)
    return value


def uses_window_attention(vision_config: Any) -> bool:
    """Whether a vision config describes a window-attention ViT (`VitDetConfig` with window blocks)."""
    return (
        getattr(vision_config, "model_type", None) == "vitdet"
        and int(getattr(vision_config, "window_size", 0) or 0) > 0
        and bool(list(getattr(vision_config, "window_block_indices", []) or []))
    )


class DITOConfig(PretrainedConfig):
    r"""Configuration of [`DITOModel`]: the two towers, the feature pyramid, the RoI head, box sampling and the loss.

    Args:
        vision_config (`PretrainedConfig` or `dict`, *optional*): the vision tower (`vitdet` for shifted windows;
            a dict needs `model_type`).
        text_config (`PretrainedConfig` or `dict`, *optional*): the text tower (any transformers text encoder).
        projection_dim (`int`, *optional*, defaults to `256`): width of the shared image-text space.
        fpn_dim (`int`, *optional*, defaults to `256`): channels of every pyramid level.
        fpn_levels (`Sequence[int]`, *optional*, defaults to `(2, 3, 4, 5)`): the levels built, a subset of
            P2-P5 (P4 is the patch grid).
        roi_output_size (`int`, *optional*, defaults to `7`): RoI-Align bins per side.
        sampling_ratio (`int`, *optional*, defaults to `2`): bilinear samples per bin and axis (`<= 0`: adaptive).
        region_hidden_size (`int`, *optional*, defaults to `1024`): hidden width of the region head.
        text_pooling (`str`, *optional*, defaults to `"mean"`): `"mean"` (masked mean of token states) or
            `"cls"` (first token).
        logit_scale_init (`float`, *optional*, defaults to `log(1 / 0.07)`): initial log of the logit scale.
        logit_scale_max (`float`, *optional*, defaults to `100.0`): cap of the scale in the forward pass.
        shifted_window (`bool`, *optional*, defaults to `True`): shifted-window learning (needs a window-attention
            `vitdet` tower).
        shift_size (`int`, *optional*): roll of the grid in cells (default: half the window).
        box_sampling (`str`, *optional*, defaults to `"per_level"`): `"per_level"` or `"assigned"` (module
            docstring).
        num_random_boxes (`int`, *optional*, defaults to `1`): random boxes per image (per level with
            `"per_level"`), besides the whole-image box.
        random_box_min_size (`float`, *optional*, defaults to `0.25`): smallest side of a random box, as a share of
            the image side.
        random_box_max_size (`float`, *optional*, defaults to `1.0`): largest side of a random box, likewise.
        canonical_box_size (`float`, *optional*, defaults to `224.0`): box side that the FPN rule puts on
            `canonical_level`.
        canonical_level (`int`, *optional*, defaults to `4`): `k0` of the FPN rule.
        image_loss_weight (`float`, *optional*, defaults to `1.0`): weight of the image-level CLIP term.
        region_loss_weight (`float`, *optional*, defaults to `1.0`): weight of the region terms (`0`: CLIP only).
        image_size (`int`, *optional*): side of the square images (default: the vision tower's `image_size`, else
            224).
        image_mean (`Sequence[float]`, *optional*, defaults to `(0.5, 0.5, 0.5)`): per-channel mean.
        image_std (`Sequence[float]`, *optional*, defaults to `(0.5, 0.5, 0.5)`): per-channel deviation.
        layer_norm_eps (`float`, *optional*, defaults to `1e-6`): epsilon of the head's LayerNorms.
        initializer_range (`float`, *optional*, defaults to `0.02`): deviation of the head's weights at
            initialisation.
    """

    model_type = "dito_dual_encoder"
    sub_configs = {"vision_config": AutoConfig, "text_config": AutoConfig}
    keys_to_ignore_at_inference = ["image_embeds", "text_embeds", "region_embeds", "logit_scale"]

    def __init__(
        self,
        vision_config: PretrainedConfig | dict[str, Any] | None = None,
        text_config: PretrainedConfig | dict[str, Any] | None = None,
        projection_dim: int = 256,
        fpn_dim: int = 256,
        fpn_levels: Sequence[int] = PYRAMID_LEVELS,
        roi_output_size: int = 7,
        sampling_ratio: int = 2,
        region_hidden_size: int = 1024,
        text_pooling: str = "mean",
        logit_scale_init: float = math.log(1 / 0.07),
        logit_scale_max: float = 100.0,
        shifted_window: bool = True,
        shift_size: int | None = None,
        box_sampling: str = "per_level",
        num_random_boxes: int = 1,
        random_box_min_size: float = 0.25,
        random_box_max_size: float = 1.0,
        canonical_box_size: float = 224.0,
        canonical_level: int = 4,
        image_loss_weight: float = 1.0,
        region_loss_weight: float = 1.0,
        image_size: int | None = None,
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
        layer_norm_eps: float = 1e-6,
        initializer_range: float = 0.02,
        **kwargs: Any,
    ) -> None:
        vision_config = _as_config("vision_config", vision_config)
        text_config = _as_config("text_config", text_config)
        levels = sorted({int(v) for v in fpn_levels})
        if not levels or any(v not in PYRAMID_LEVELS for v in levels):
            raise ValueError(
                f"fpn_levels must be a non-empty subset of {PYRAMID_LEVELS}, got {list(fpn_levels)}."
            )
        if text_pooling not in TEXT_POOLING:
            raise ValueError(f"Unknown text_pooling {text_pooling!r}; expected one of {TEXT_POOLING}.")
        if box_sampling not in BOX_SAMPLING:
            raise ValueError(f"Unknown box_sampling {box_sampling!r}; expected one of {BOX_SAMPLING}.")
        if (
            isinstance(num_random_boxes, bool)
            or not isinstance(num_random_boxes, int)
            or num_random_boxes < 0
        ):
            raise ValueError(f"num_random_boxes must be an integer >= 0, got {num_random_boxes!r}.")
        low = _finite("random_box_min_size", random_box_min_size, 0.0, strict=True)
        high = _finite("random_box_max_size", random_box_max_size, 0.0, strict=True)
        if not low <= high <= 1.0:
            raise ValueError(
                f"random box sizes must satisfy 0 < random_box_min_size <= random_box_max_size <= 1, got "
                f"{random_box_min_size} and {random_box_max_size}."
            )
        if isinstance(sampling_ratio, bool) or not isinstance(sampling_ratio, int):
            raise ValueError(f"sampling_ratio must be an integer (<= 0: adaptive), got {sampling_ratio!r}.")
        if shifted_window and vision_config is not None and not uses_window_attention(vision_config):
            raise ValueError(
                "shifted_window=True needs a window-attention ViT (a 'vitdet' vision_config with window_size > 0 "
                f"and window_block_indices), got model_type {getattr(vision_config, 'model_type', None)!r}"
                + (
                    f" with window_block_indices {list(vision_config.window_block_indices)}"
                    if getattr(vision_config, "model_type", None) == "vitdet"
                    else ""
                )
                + "; set shifted_window=False."
            )
        if shift_size is not None:
            shift_size = _positive_int("shift_size", shift_size)
        if image_size is None:
            image_size = getattr(vision_config, "image_size", None)
            image_size = (
                image_size if isinstance(image_size, int) and not isinstance(image_size, bool) else 224
            )
        image_mean, image_std = [float(v) for v in image_mean], [float(v) for v in image_std]
        channels = int(getattr(vision_config, "num_channels", 3) or 3)
        if len(image_mean) != channels or len(image_std) != channels:
            raise ValueError(
                f"image_mean and image_std need one value per channel ({channels}), got {image_mean} and {image_std}."
            )
        if any(s <= 0 for s in image_std):
            raise ValueError(f"image_std values must be > 0, got {image_std}.")
        self.vision_config = vision_config
        self.text_config = text_config
        self.projection_dim = _positive_int("projection_dim", projection_dim)
        self.fpn_dim = _positive_int("fpn_dim", fpn_dim)
        self.fpn_levels = levels
        self.roi_output_size = _positive_int("roi_output_size", roi_output_size)
        self.sampling_ratio = int(sampling_ratio)
        self.region_hidden_size = _positive_int("region_hidden_size", region_hidden_size)
        self.text_pooling = text_pooling
        self.logit_scale_init = _finite("logit_scale_init", logit_scale_init)
        self.logit_scale_max = _finite("logit_scale_max", logit_scale_max, 1.0, strict=True)
        self.shifted_window = bool(shifted_window)
        self.shift_size = shift_size
        self.box_sampling = box_sampling
        self.num_random_boxes = int(num_random_boxes)
        self.random_box_min_size = low
        self.random_box_max_size = high
        self.canonical_box_size = _finite("canonical_box_size", canonical_box_size, 0.0, strict=True)
        self.canonical_level = int(canonical_level)
        self.image_loss_weight = _finite("image_loss_weight", image_loss_weight, 0.0)
        self.region_loss_weight = _finite("region_loss_weight", region_loss_weight, 0.0)
        if self.image_loss_weight == 0 and self.region_loss_weight == 0:
            raise ValueError(
                "image_loss_weight and region_loss_weight are both 0: there is nothing to train."
            )
        self.image_size = _positive_int("image_size", image_size)
        self.image_mean = image_mean
        self.image_std = image_std
        self.layer_norm_eps = _finite("layer_norm_eps", layer_norm_eps, 0.0, strict=True)
        self.initializer_range = float(initializer_range)
        super().__init__(**kwargs)

    @property
    def effective_shift_size(self) -> int:
        """The roll of the shifted pass in grid cells: `shift_size`, else half the vision tower's window."""
        if self.shift_size is not None:
            return self.shift_size
        return max(1, int(getattr(self.vision_config, "window_size", 2)) // 2)

    @property
    def vision_width(self) -> int:
        """Channels of the vision tower's patch grid."""
        sizes = getattr(self.vision_config, "hidden_sizes", None)
        if isinstance(sizes, (list, tuple)) and sizes and isinstance(sizes[-1], int):
            return int(sizes[-1])
        return backbone_hidden_size(self.vision_config, "DITOConfig")


# -- boxes --------------------------------------------------------------------------------------------------


def sample_boxes(
    batch_size: int,
    num_boxes: int,
    image_size: int,
    min_size: float = 0.25,
    max_size: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Random boxes `[batch_size, num_boxes, 4]` `(x1, y1, x2, y2)` inside a square image of side `image_size`.

    Width and height are drawn independently and uniformly in `[min_size, max_size] * image_size`, the top-left
    corner uniformly among the positions that keep the box inside the image.

    Args:
        batch_size (`int`): images.
        num_boxes (`int`): boxes per image.
        image_size (`int`): the image side in pixels.
        min_size (`float`, *optional*, defaults to `0.25`): smallest side as a share of the image side.
        max_size (`float`, *optional*, defaults to `1.0`): largest side likewise.
        generator (`torch.Generator`, *optional*): the random source (default: torch's global one).
        device (`torch.device | str`, *optional*): where the boxes are made.
    """
    if not 0 < min_size <= max_size <= 1:
        raise ValueError(f"sample_boxes needs 0 < min_size <= max_size <= 1, got {min_size} and {max_size}.")
    shape = (batch_size, num_boxes)
    u = torch.rand((4, *shape), generator=generator, dtype=torch.float64)
    side = float(image_size)
    w = (min_size + (max_size - min_size) * u[0]) * side
    h = (min_size + (max_size - min_size) * u[1]) * side
    x1 = u[2] * (side - w)
    y1 = u[3] * (side - h)
    return torch.stack([x1, y1, x1 + w, y1 + h], dim=-1).float().to(device)


def clip_boxes(boxes: torch.Tensor, image_size: int) -> tuple[torch.Tensor, int]:
    """Boxes clipped to `[0, image_size]`, and how many needed it.

    Args:
        boxes (`torch.Tensor`): `[..., 4]` boxes `(x1, y1, x2, y2)` in pixels.
        image_size (`int`): the side of the square image.

    Raises:
        `ValueError`: for non-finite boxes, a box with `x2 <= x1` or `y2 <= y1`, or one with no area inside the
            image, naming the first such box.
    """
    if not isinstance(boxes, torch.Tensor) or boxes.shape[-1] != 4:
        shape = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
        raise ValueError(f"boxes must be a tensor of shape [..., 4] (x1, y1, x2, y2), got {shape}.")
    if not torch.isfinite(boxes).all():
        raise ValueError("boxes hold NaN or inf.")
    flat = boxes.reshape(-1, 4)
    bad = (flat[:, 2] <= flat[:, 0]) | (flat[:, 3] <= flat[:, 1])
    if bad.any():
        i = int(bad.nonzero()[0])
        raise ValueError(f"box {i} {flat[i].tolist()} is empty: need x2 > x1 and y2 > y1.")
    clipped = flat.clamp(0.0, float(image_size))
    empty = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
    if empty.any():
        i = int(empty.nonzero()[0])
        raise ValueError(
            f"box {i} {flat[i].tolist()} lies outside the {image_size}x{image_size} image (no area left after "
            "clipping)."
        )
    changed = int((clipped != flat).any(dim=1).sum())
    return clipped.reshape(boxes.shape), changed


# -- the pyramid and the shifted window -----------------------------------------------------------------------


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of a `[B, C, H, W]` map (ViTDet's `LayerNorm2d`)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid (Li et al. 2022) over one patch grid of stride `p`.

    Level 4 is the grid, level 3 a 2x transposed convolution, level 2 two of them (with a LayerNorm and GELU
    between), level 5 a 2x max-pool; each level then goes through `Conv1x1 -> LayerNorm -> Conv3x3 -> LayerNorm` to
    `out_channels`. Level `k` has stride `p * 2^(k - 4)`.

    Args:
        in_channels (`int`): channels of the grid.
        out_channels (`int`): channels of every level.
        levels (`Sequence[int]`, *optional*, defaults to `(2, 3, 4, 5)`): the levels built.
        eps (`float`, *optional*, defaults to `1e-6`): LayerNorm epsilon.
    """

    def __init__(
        self, in_channels: int, out_channels: int, levels: Sequence[int] = PYRAMID_LEVELS, eps: float = 1e-6
    ) -> None:
        super().__init__()
        self.levels = [int(v) for v in levels]
        self.scales = nn.ModuleDict()
        self.outputs = nn.ModuleDict()
        for level in self.levels:
            if level == 2:
                width = max(in_channels // 4, 1)
                scale = nn.Sequential(
                    nn.ConvTranspose2d(in_channels, in_channels // 2, 2, stride=2),
                    ChannelLayerNorm(in_channels // 2, eps),
                    nn.GELU(),
                    nn.ConvTranspose2d(in_channels // 2, width, 2, stride=2),
                )
            elif level == 3:
                width = max(in_channels // 2, 1)
                scale = nn.ConvTranspose2d(in_channels, width, 2, stride=2)
            elif level == 4:
                width, scale = in_channels, nn.Identity()
            elif level == 5:
                width, scale = in_channels, nn.MaxPool2d(2, stride=2)
            else:
                raise ValueError(f"SimpleFeaturePyramid builds levels 2-5, got {level}.")
            self.scales[str(level)] = scale
            self.outputs[str(level)] = nn.Sequential(
                nn.Conv2d(width, out_channels, 1, bias=False),
                ChannelLayerNorm(out_channels, eps),
                nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                ChannelLayerNorm(out_channels, eps),
            )

    def forward(self, grid: torch.Tensor) -> dict[int, torch.Tensor]:
        """`{level: [B, out_channels, H_k, W_k]}` from a `[B, in_channels, h, w]` grid."""
        return {level: self.outputs[str(level)](self.scales[str(level)](grid)) for level in self.levels}


def shifted_window_forward(
    blocks: Callable[[torch.Tensor], torch.Tensor], grid: torch.Tensor, shift: int
) -> torch.Tensor:
    """DITO's shifted-window learning: `(blocks(grid) + roll(blocks(roll(grid, s)), -s)) / 2`.

    The roll is along both spatial axes of a `[B, C, h, w]` grid; tokens rolled off one edge come back on the
    other, and rolling back puts every output where its input came from, so the shifted pass sees windows whose
    borders lie `shift` cells away from the plain pass's.

    Args:
        blocks (`Callable[[torch.Tensor], torch.Tensor]`): the transformer blocks, `[B, C, h, w] -> [B, C, h, w]`.
        grid (`torch.Tensor`): the embedded patch grid `[B, C, h, w]`.
        shift (`int`): the roll in cells.
    """
    if grid.dim() != 4:
        raise ValueError(f"shifted_window_forward needs a [B, C, h, w] grid, got shape {tuple(grid.shape)}.")
    plain = blocks(grid)
    shifted = blocks(torch.roll(grid, shifts=(shift, shift), dims=(2, 3)))
    return (plain + torch.roll(shifted, shifts=(-shift, -shift), dims=(2, 3))) / 2


# -- the loss ------------------------------------------------------------------------------------------------


class DITOLoss(ContrastiveLoss):
    r"""DITO's objective: CLIP's symmetric InfoNCE on images and on every region slot, against the captions.

    `L = image_loss_weight * CLIP(I, T) + region_loss_weight * 1/R sum_r CLIP(R_r, T)`, with `I` the `[B, D]`
    image embeddings, `R_r` the `[B, D]` embeddings of region slot `r` (one box of each image, pooled from one
    pyramid level), `T` the `[B, D]` caption embeddings, all L2-normalised, and [`CLIPLoss`] at the model's scale
    (negatives gathered from every process when training is distributed).

    Args:
        image_loss_weight (`float`, *optional*, defaults to `1.0`): weight of the image term.
        region_loss_weight (`float`, *optional*, defaults to `1.0`): weight of the mean region term.
        gather (`bool | None`, *optional*): gather negatives from every process (`None`: when distributed).

    Example::

        loss = DITOLoss()
        out = loss(image_embeds, text_embeds, logit_scale, region_embeds=regions)  # regions [B, R, D]
    """

    citation = DITO_CITATION + "\n\n" + CLIP_CITATION

    def __init__(
        self, image_loss_weight: float = 1.0, region_loss_weight: float = 1.0, gather: bool | None = None
    ) -> None:
        super().__init__()
        self.image_loss_weight = _finite("image_loss_weight", image_loss_weight, 0.0)
        self.region_loss_weight = _finite("region_loss_weight", region_loss_weight, 0.0)
        self.gather = gather
        self.clip = CLIPLoss(gather=gather)

    @classmethod
    def from_config(cls, config: DITOConfig, gather: bool | None = None) -> DITOLoss:
        """The loss a [`DITOConfig`] describes."""
        return cls(config.image_loss_weight, config.region_loss_weight, gather)

    def config_dict(self) -> dict[str, Any]:
        return {
            "image_loss_weight": self.image_loss_weight,
            "region_loss_weight": self.region_loss_weight,
            "gather": self.gather,
            "local_loss": True,
        }

    def forward(
        self,
        image_embeds: torch.Tensor,
        text_embeds: torch.Tensor,
        logit_scale: torch.Tensor | float,
        region_embeds: torch.Tensor | None = None,
    ) -> LossOutput:
        """Loss of `B` images (`[B, D]`), their captions (`[B, D]`) and, when weighted, their regions `[B, R, D]`."""
        owner = type(self).__name__
        if self.region_loss_weight > 0:
            if region_embeds is None:
                raise ValueError(f"{owner}: region_loss_weight > 0 needs region_embeds [B, R, D].")
            if region_embeds.dim() != 3 or region_embeds.shape[0] != image_embeds.shape[0]:
                raise ValueError(
                    f"{owner}: region_embeds must have shape [B, R, D] with B = {image_embeds.shape[0]}, got "
                    f"{tuple(region_embeds.shape)}."
                )
            if region_embeds.shape[1] == 0:
                raise ValueError(f"{owner}: region_embeds holds no region (R = 0).")
        image = self.clip(image_embeds, text_embeds, logit_scale)
        loss = self.image_loss_weight * image.loss
        components = {
            "image_clip": image.loss.detach(),
            "accuracy": image.components["accuracy"],
            "logit_scale": image.components["logit_scale"],
        }
        if self.region_loss_weight > 0:
            terms = [
                self.clip(region_embeds[:, r], text_embeds, logit_scale)
                for r in range(region_embeds.shape[1])
            ]
            region = torch.stack([t.loss for t in terms]).mean()
            loss = loss + self.region_loss_weight * region
            components["region_clip"] = region.detach()
            components["region_accuracy"] = torch.stack([t.components["accuracy"] for t in terms]).mean()
        return LossOutput(loss, components)


# -- the model -----------------------------------------------------------------------------------------------


@dataclass
class DITOOutput(ModelOutput):
    """Output of [`DITOModel`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): the [`DITOLoss`], when captions are given.
        image_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`): normalised image embeddings.
        text_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`, *optional*): normalised caption
            embeddings.
        region_embeds (`torch.FloatTensor` of shape `(batch_size, num_regions, projection_dim)`, *optional*):
            normalised region embeddings (given or sampled boxes).
        logit_scale (`torch.FloatTensor` of shape `()`): the scale used (capped).
    """

    loss: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    region_embeds: torch.FloatTensor | None = None
    logit_scale: torch.FloatTensor | None = None


class DITOPreTrainedModel(PreTrainedModel):
    """Base of [`DITOModel`]: config class, weight initialisation and input name, as transformers expects."""

    config_class = DITOConfig
    base_model_prefix = "dito"
    main_input_name = "pixel_values"
    accepts_loss_kwargs = False
    supports_gradient_checkpointing = True

    def _init_weights(self, module: nn.Module) -> None:
        # the towers initialise (or load) themselves; the head's layers get transformers' defaults
        if isinstance(module, DITOModel):
            init.constant_(module.logit_scale, self.config.logit_scale_init)
            return
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
            return
        super()._init_weights(module)


def _set_attention(model: PreTrainedModel) -> None:
    if getattr(model.config, "_attn_implementation", "eager") is None:
        # the composite config resets a sub-config's attention implementation; set one explicitly
        model.config._attn_implementation = "sdpa" if getattr(model, "_supports_sdpa", False) else "eager"


def _tower(name: str, value: Any, kwargs: Mapping[str, Any] | None) -> tuple[PreTrainedModel, str | None]:
    if isinstance(value, PreTrainedModel):
        return value, None
    if isinstance(value, PretrainedConfig):
        return AutoModel.from_config(value), None
    if isinstance(value, (str, os.PathLike)):
        return AutoModel.from_pretrained(os.fspath(value), **dict(kwargs or {})), os.fspath(value)
    raise TypeError(
        f"{name} must be a folder / Hub id, a PretrainedConfig or a PreTrainedModel, got {type(value).__name__}."
    )


class DITOModel(HubMixin, DITOPreTrainedModel):
    r"""DITO dual encoder (Kim et al. 2023): a ViT (+ simple feature pyramid + RoI-Align region head) and a text
    encoder, trained with image-level and region-level CLIP losses.

    `forward(pixel_values, input_ids, attention_mask)` embeds the images (mean of the final-normed patch grid,
    projected), the captions (pooled, projected) and, when the region loss is on or `boxes` are given, the regions,
    and returns the [`DITOLoss`]. See the module docstring for the box-sampling reading and the shifted window.

    Example::

        >>> from transformers import BertConfig, VitDetConfig
        >>> from hf_contrastive.vision.dense.dito import DITOModel
        >>> vision = VitDetConfig(image_size=64, pretrain_image_size=64, patch_size=8, hidden_size=32,
        ...     num_hidden_layers=2, num_attention_heads=2, window_size=4, window_block_indices=[0])
        >>> model = DITOModel.from_towers(vision, BertConfig(hidden_size=32, num_hidden_layers=1,
        ...     num_attention_heads=2, intermediate_size=64), projection_dim=16, fpn_dim=16, region_hidden_size=32)
        >>> out = model(pixel_values, input_ids=ids, attention_mask=mask)
        >>> out.loss.backward()
    """

    card_template = "dito_dual_encoder.md"
    card_pipeline_tag = "zero-shot-image-classification"
    card_tags = ("image-text", "contrastive-learning", "region-text", "dito")
    card_citations = (DITO_CITATION, CLIP_CITATION)
    gather: bool | None = None

    def __init__(
        self,
        config: DITOConfig,
        vision_model: PreTrainedModel | None = None,
        text_model: PreTrainedModel | None = None,
    ) -> None:
        super().__init__(config)
        if config.vision_config is None or config.text_config is None:
            raise ValueError("DITOConfig needs both vision_config and text_config to build a DITOModel.")
        self.vision_model = (
            vision_model if vision_model is not None else AutoModel.from_config(config.vision_config)
        )
        self.text_model = text_model if text_model is not None else AutoModel.from_config(config.text_config)
        _set_attention(self.vision_model)
        _set_attention(self.text_model)
        width = config.vision_width
        self.vision_norm = ChannelLayerNorm(width, config.layer_norm_eps)
        self.fpn = SimpleFeaturePyramid(width, config.fpn_dim, config.fpn_levels, config.layer_norm_eps)
        size = config.roi_output_size
        self.region_head = nn.Sequential(
            nn.Flatten(1),
            nn.Linear(config.fpn_dim * size * size, config.region_hidden_size),
            nn.GELU(),
            nn.Linear(config.region_hidden_size, config.projection_dim),
        )
        self.image_projection = nn.Linear(width, config.projection_dim)
        text_width = backbone_hidden_size(config.text_config, "DITOConfig")
        self.text_projection = nn.Linear(text_width, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init)))
        self.card_info = ModelCardInfo()
        self.tokenizer: Any = None
        self.clipped_boxes = 0
        self.post_init()

    @classmethod
    def from_towers(
        cls,
        vision: str | os.PathLike | PretrainedConfig | PreTrainedModel,
        text: str | os.PathLike | PretrainedConfig | PreTrainedModel,
        vision_kwargs: Mapping[str, Any] | None = None,
        text_kwargs: Mapping[str, Any] | None = None,
        **config_kwargs: Any,
    ) -> DITOModel:
        """A new DITO head on two towers.

        Args:
            vision (`str | os.PathLike | PretrainedConfig | PreTrainedModel`): the vision tower: a folder or Hub id
                (loaded), a config (random initialisation) or a model.
            text (`str | os.PathLike | PretrainedConfig | PreTrainedModel`): the text tower, likewise.
            vision_kwargs (`Mapping[str, Any]`, *optional*): `AutoModel.from_pretrained` options of the vision tower.
            text_kwargs (`Mapping[str, Any]`, *optional*): the same for the text tower.
            config_kwargs (`Any`): [`DITOConfig`] settings.
        """
        vision_model, vision_source = _tower("vision", vision, vision_kwargs)
        text_model, text_source = _tower("text", text, text_kwargs)
        config = DITOConfig(vision_config=vision_model.config, text_config=text_model.config, **config_kwargs)
        model = cls(config, vision_model=vision_model, text_model=text_model)
        for source in (text_source, vision_source):
            if source is not None and not os.path.exists(source):
                model.card_info.base_model = source
        return model

    # -- towers ------------------------------------------------------------------------------------------
    def patch_grid(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The final-normed patch grid `[B, C, h, w]` of the vision tower (shifted-window averaged when set).

        Raises:
            `ValueError`: when the tower's output is not a grid (see the module docstring).
        """
        vision = self.vision_model
        config = self.config
        if getattr(vision.config, "model_type", None) == "vitdet":
            embedded = vision.embeddings(pixel_values)  # [B, C, h, w], position embeddings added

            def blocks(x: torch.Tensor) -> torch.Tensor:
                return vision.encoder(x, return_dict=True).last_hidden_state

            if config.shifted_window:
                grid = shifted_window_forward(blocks, embedded, config.effective_shift_size)
            else:
                grid = blocks(embedded)
            return self.vision_norm(grid)
        # other towers: a 4-D map as it is, or patch tokens laid on their grid (refused when neither)
        return self.vision_norm(spatial_features(vision, pixel_values))

    def grid_stride(self, pixel_values: torch.Tensor, grid: torch.Tensor) -> float:
        """Image pixels per grid cell (the stride of pyramid level 4)."""
        stride = pixel_values.shape[-1] / grid.shape[-1]
        if abs(stride * grid.shape[-2] - pixel_values.shape[-2]) > 1e-6 * stride:
            raise ValueError(
                f"DITOModel: the patch grid {tuple(grid.shape[-2:])} does not tile the image "
                f"{tuple(pixel_values.shape[-2:])} with one stride."
            )
        return float(stride)

    def text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **text_kwargs: Any
    ) -> torch.Tensor:
        """Projected, unnormalised caption features `[N, projection_dim]`."""
        out = self.text_model(
            input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **text_kwargs
        )
        states = out.last_hidden_state
        if self.config.text_pooling == "cls":
            pooled = states[:, 0]
        else:
            mask = (
                attention_mask
                if attention_mask is not None
                else torch.ones(states.shape[:2], dtype=torch.long, device=states.device)
            )
            pooled = pool("mean", states, mask)
        return self.text_projection(pooled)

    # -- regions -----------------------------------------------------------------------------------------
    def _pool_slots(
        self, pyramid: dict[int, torch.Tensor], boxes: torch.Tensor, levels: torch.Tensor, stride: float
    ) -> torch.Tensor:
        """Region embeddings `[B, R, D]` of `boxes` `[B, R, 4]`, each pooled from its level `levels[B, R]`."""
        batch, slots = boxes.shape[:2]
        index = torch.arange(batch, device=boxes.device, dtype=boxes.dtype)[:, None].expand(batch, slots)
        rois = torch.cat([index[..., None], boxes], dim=-1).reshape(-1, 5)
        flat_levels = levels.reshape(-1)
        size = self.config.roi_output_size
        any_map = next(iter(pyramid.values()))
        pooled = any_map.new_zeros((rois.shape[0], self.config.fpn_dim, size, size))
        for level, features in pyramid.items():
            rows = (flat_levels == level).nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            scale = 1.0 / (stride * 2.0 ** (level - 4))
            part = roi_align(features, rois[rows], size, scale, self.config.sampling_ratio, aligned=True)
            pooled = pooled.index_copy(0, rows, part)
        return self.region_head(pooled).reshape(batch, slots, -1)

    def sampled_boxes(
        self, batch: int, image_side: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The training boxes `[B, R, 4]` and their levels `[B, R]` as `config.box_sampling` says."""
        config = self.config
        whole = torch.tensor([0.0, 0.0, image_side, image_side], device=device)
        k = config.num_random_boxes

        def one_set() -> torch.Tensor:
            parts = [whole.expand(batch, 1, 4)]
            if k:
                parts.append(
                    sample_boxes(
                        batch,
                        k,
                        image_side,
                        config.random_box_min_size,
                        config.random_box_max_size,
                        device=device,
                    )
                )
            return torch.cat(parts, dim=1)

        if config.box_sampling == "per_level":
            boxes = torch.cat([one_set() for _ in config.fpn_levels], dim=1)
            levels = torch.tensor(
                [level for level in config.fpn_levels for _ in range(1 + k)], device=device
            ).expand(batch, -1)
            return boxes, levels
        boxes = one_set()
        return boxes, self.box_levels(boxes)

    def box_levels(self, boxes: torch.Tensor) -> torch.Tensor:
        """FPN levels of `boxes` `[..., 4]` by the FPN rule, clamped to the built levels."""
        config = self.config
        return assign_fpn_levels(
            boxes,
            min(config.fpn_levels),
            max(config.fpn_levels),
            config.canonical_box_size,
            config.canonical_level,
        ).to(boxes.device)

    def region_embeddings(
        self,
        pixel_values: torch.Tensor,
        boxes: torch.Tensor | None = None,
        grid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Normalised region embeddings `[B, R, D]`: of `boxes` `[B, R, 4]` (pixels, clipped and counted), each at its
        FPN level, or of the sampled training boxes when `boxes` is `None`."""
        if grid is None:
            grid = self.patch_grid(pixel_values)
        stride = self.grid_stride(pixel_values, grid)
        side = int(pixel_values.shape[-1])
        if boxes is None:
            slot_boxes, levels = self.sampled_boxes(pixel_values.shape[0], side, pixel_values.device)
        else:
            if boxes.dim() != 3 or boxes.shape[0] != pixel_values.shape[0] or boxes.shape[-1] != 4:
                raise ValueError(
                    f"DITOModel: boxes must have shape [B, R, 4] with B = {pixel_values.shape[0]}, got "
                    f"{tuple(boxes.shape)}."
                )
            if pixel_values.shape[-1] != pixel_values.shape[-2]:
                raise ValueError("DITOModel: boxes are clipped to square images; got a non-square batch.")
            slot_boxes, changed = clip_boxes(boxes.to(pixel_values.device), side)
            if changed:
                self.clipped_boxes += changed
                logger.warning(
                    "DITOModel: %d box(es) reached outside the %dx%d image and were clipped (%d so far).",
                    changed,
                    side,
                    side,
                    self.clipped_boxes,
                )
            levels = self.box_levels(slot_boxes)
        pyramid = self.fpn(grid)
        slot_boxes = slot_boxes.to(grid.dtype)
        return F.normalize(self._pool_slots(pyramid, slot_boxes, levels, stride), dim=-1)

    # -- forward -----------------------------------------------------------------------------------------
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        return_loss: bool | None = None,
        return_dict: bool | None = None,
    ) -> DITOOutput:
        r"""Embed images (and captions, regions); with captions, the [`DITOLoss`].

        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, channels, height, width)`): the images.
            input_ids (`torch.LongTensor` of shape `(batch_size, seq_len)`, *optional*): one caption per image.
            attention_mask (`torch.LongTensor` of shape `(batch_size, seq_len)`, *optional*): the captions' mask.
            token_type_ids (`torch.LongTensor` of shape `(batch_size, seq_len)`, *optional*): for BERT-like towers.
            boxes (`torch.FloatTensor` of shape `(batch_size, num_boxes, 4)`, *optional*): boxes to embed
                (pixels of the input image); they replace the sampled boxes in the loss.
            return_loss (`bool`, *optional*): compute the loss (default: when captions are given).
            return_dict (`bool`, *optional*): accepted for `Trainer`; the output is always a [`DITOOutput`].
        """
        owner = type(self).__name__
        if pixel_values is None or pixel_values.dim() != 4:
            shape = None if pixel_values is None else tuple(pixel_values.shape)
            raise ValueError(f"{owner}.forward needs pixel_values of shape [B, C, H, W], got {shape}.")
        if return_loss is None:
            return_loss = input_ids is not None
        if return_loss and input_ids is None:
            raise ValueError(f"{owner}: return_loss=True needs captions (input_ids).")
        if input_ids is not None and input_ids.shape[0] != pixel_values.shape[0]:
            raise ValueError(
                f"{owner}: one caption per image is needed, got {input_ids.shape[0]} captions for "
                f"{pixel_values.shape[0]} images."
            )
        grid = self.patch_grid(pixel_values)
        image_embeds = F.normalize(self.image_projection(grid.mean(dim=(2, 3))), dim=-1)
        scale = self.logit_scale.exp().clamp(max=self.config.logit_scale_max)
        output = DITOOutput(image_embeds=image_embeds, logit_scale=scale)
        wants_regions = boxes is not None or (return_loss and self.config.region_loss_weight > 0)
        if wants_regions:
            output.region_embeds = self.region_embeddings(pixel_values, boxes, grid=grid)
        if input_ids is not None:
            text_kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            output.text_embeds = F.normalize(
                self.text_features(input_ids, attention_mask, **text_kwargs), dim=-1
            )
        if return_loss:
            result = self.dito_loss()(output.image_embeds, output.text_embeds, scale, output.region_embeds)
            output.loss = result.loss
            self.__dict__["_last_components"] = result.components
        return output

    def dito_loss(self) -> DITOLoss:
        """The [`DITOLoss`] of the current config; it gathers negatives as `self.gather` says."""
        return DITOLoss.from_config(self.config, gather=self.gather)

    @property
    def last_loss_components(self) -> dict[str, torch.Tensor]:
        """The named loss terms of the latest `forward` with a loss (for logging)."""
        return dict(self.__dict__.get("_last_components", {}))

    # -- inference ---------------------------------------------------------------------------------------
    def image_pixels(self, images: Sequence[Any]) -> torch.Tensor:
        """`[N, 3, S, S]` pixel values of images (paths or PIL): resize to `config.image_size`, normalise."""
        transform = eval_image_transform(self.config)
        return torch.stack([transform(load_image(im)) for im in images])

    @torch.no_grad()
    def encode_images(
        self, images: Sequence[Any], batch_size: int = 32, output: str = "image_embeds"
    ) -> torch.Tensor:
        """Embeddings (float32, CPU) of images in eval mode.

        Args:
            images (`Sequence[Any]`): paths or PIL images.
            batch_size (`int`, *optional*, defaults to `32`): images per forward.
            output (`str`, *optional*, defaults to `"image_embeds"`): `"image_embeds"` (`[N, D]`, normalised) or
                `"patch_grid"` (`[N, C, h, w]`, the final-normed grid: the dense features).
        """
        if output not in ("image_embeds", "patch_grid"):
            raise ValueError(f"output must be 'image_embeds' or 'patch_grid', got {output!r}.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if isinstance(images, (str, os.PathLike)):
            raise TypeError("images must be a sequence of images, got a single path.")
        was_training = self.training
        self.eval()
        parts = []
        try:
            for start in range(0, len(images), batch_size):
                pixels = self.image_pixels(images[start : start + batch_size]).to(self.device, self.dtype)
                if output == "patch_grid":
                    parts.append(self.patch_grid(pixels).float().cpu())
                else:
                    parts.append(self(pixel_values=pixels, return_loss=False).image_embeds.float().cpu())
        finally:
            self.train(was_training)
        return torch.cat(parts) if parts else torch.empty(0, self.config.projection_dim)

    @torch.no_grad()
    def encode_texts(
        self, texts: Sequence[str], tokenizer: Any = None, batch_size: int = 64, max_length: int | None = None
    ) -> torch.Tensor:
        """Normalised caption embeddings `[N, D]` (float32, CPU) in eval mode.

        Args:
            texts (`Sequence[str]`): the captions.
            tokenizer (`Any`, *optional*): the text tower's tokenizer (default: `model.tokenizer`).
            batch_size (`int`, *optional*, defaults to `64`): texts per forward.
            max_length (`int`, *optional*): truncation length.
        """
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        if tokenizer is None:
            raise ValueError("encode_texts needs a tokenizer (argument, or set model.tokenizer).")
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, got one string.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        was_training = self.training
        self.eval()
        parts = []
        try:
            for start in range(0, len(texts), batch_size):
                feats = tokenize_texts(tokenizer, list(texts[start : start + batch_size]), "dual", max_length)
                feats = {k: v.to(self.device) for k, v in feats.items()}
                parts.append(F.normalize(self.text_features(**feats), dim=-1).float().cpu())
        finally:
            self.train(was_training)
        return torch.cat(parts) if parts else torch.empty(0, self.config.projection_dim)

    # -- model card --------------------------------------------------------------------------------------
    def card_details(self) -> dict[str, Any]:
        """Settings of the model for `model_cards/dito_dual_encoder.md`."""
        config = self.config
        vision_type = getattr(config.vision_config, "model_type", None)
        text_type = getattr(config.text_config, "model_type", None)
        return {
            "title": f"DITO {vision_type} + {text_type} dual encoder",
            "description": (
                f"A `{vision_type}` image encoder with a simple feature pyramid and an RoI-Align region head, and a "
                f"`{text_type}` text encoder, trained with DITO's region-level and image-level CLIP losses, made "
                "with hf-contrastive."
            ),
            "backbone_type": vision_type,
            "vision_architecture": type(self.vision_model).__name__,
            "text_architecture": type(self.text_model).__name__,
            "text_pooling": config.text_pooling,
            "projection_dim": config.projection_dim,
            "fpn_levels": ", ".join(f"P{level}" for level in config.fpn_levels),
            "fpn_dim": config.fpn_dim,
            "roi_output_size": config.roi_output_size,
            "sampling_ratio": config.sampling_ratio,
            "shifted_window": (
                f"on (roll {config.effective_shift_size} cells)" if config.shifted_window else "off"
            ),
            "box_sampling": config.box_sampling,
            "num_random_boxes": config.num_random_boxes,
            "image_loss_weight": config.image_loss_weight,
            "region_loss_weight": config.region_loss_weight,
            "logit_scale": round(float(self.logit_scale.detach().exp().clamp(max=config.logit_scale_max)), 4),
            "image_size": config.image_size,
            "image_mean": config.image_mean,
            "image_std": config.image_std,
        }


# -- data ------------------------------------------------------------------------------------------------------


def eval_image_transform(config: DITOConfig) -> Compose:
    """Evaluation transform of a [`DITOConfig`]: resize the shorter side, centre crop `image_size`, normalise."""
    return eval_transform(config.image_size, config.image_mean, config.image_std, interpolation="bilinear")


class DITOCollator(ImageTextCollator):
    r"""Rows with an image and one caption or a list of captions -> `pixel_values`, `input_ids`, `attention_mask`.

    An [`hf_contrastive.vision.data.ImageTextCollator`] set up for a [`DITOConfig`]: the tokenizer of the text
    tower, and either the evaluation transform (resize, centre crop, normalise) or, with `train=True`, a random
    resized crop (area 0.5-1) with a horizontal flip. One caption per image is drawn (seeded); an undecodable
    image is skipped and counted.

    Args:
        tokenizer (`Any`): the text tower's tokenizer.
        image_transform (`Callable`): PIL image -> `[3, S, S]` tensor.
        max_length (`int`, *optional*): caption truncation length.
        seed (`int`, *optional*, defaults to `0`): seed of the caption draws and augmentations.
        kwargs (`Any`): other [`ImageTextCollator`] settings (`image_column`, `caption_column`...).
    """

    def __init__(
        self,
        tokenizer: Any,
        image_transform: Callable,
        max_length: int | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        if tokenizer is None:
            raise ValueError("DITOCollator needs the text tower's tokenizer.")
        super().__init__(
            tokenizer,
            family="dual",
            max_length=max_length,
            image_transform=image_transform,
            seed=seed,
            **kwargs,
        )

    @classmethod
    def from_config(
        cls, config: DITOConfig, tokenizer: Any, train: bool = False, **kwargs: Any
    ) -> DITOCollator:
        """The collator of a [`DITOConfig`] (training augmentation when `train`)."""
        if train:
            transform = global_view_transform(
                config.image_size, config.image_mean, config.image_std, scale=(0.5, 1.0), flip=True
            )
        else:
            transform = eval_image_transform(config)
        return cls(tokenizer, transform, **kwargs)


def dito_retrieval_metrics(
    model: DITOModel,
    dataset: Any,
    tokenizer: Any = None,
    batch_size: int = 32,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Image-text recall@K both ways (COCO protocol, every caption of every image) of a [`DITOModel`].

    Args:
        model (`DITOModel`): the model.
        dataset (`Any`): rows with `image` and `captions` (a list of strings), e.g. `load_coco_captions("val")`.
        tokenizer (`Any`, *optional*): the text tower's tokenizer (default: `model.tokenizer`).
        batch_size (`int`, *optional*, defaults to `32`): items per forward.
        ks (`Sequence[int]`, *optional*, defaults to `(1, 5, 10)`): cut-offs.
    """
    images = list(dataset["image"])
    texts, owner = [], []
    for i, captions in enumerate(dataset["captions"]):
        captions = [captions] if isinstance(captions, str) else list(captions)
        texts.extend(captions)
        owner.extend([i] * len(captions))
    image_embeds = model.encode_images(images, batch_size=batch_size)
    text_embeds = model.encode_texts(texts, tokenizer=tokenizer, batch_size=batch_size)
    return image_text_retrieval_metrics(image_embeds, text_embeds, owner, ks=ks)


# -- training ------------------------------------------------------------------------------------------------


@dataclass
class DITOTrainingArguments(TrainingArguments):
    r"""Training arguments of [`DITOTrainer`]: `TrainingArguments` with the defaults image-caption rows need.

    Args:
        remove_unused_columns (`bool`, *optional*, defaults to `False`): keep the image and caption columns for the
            collator.
        label_names (`list[str]`, *optional*, defaults to `[]`): no label tensors (the pairs are the labels).
        report_to (`Any`, *optional*, defaults to `"none"`): loggers.
    """

    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep the image and caption columns."}
    )
    label_names: list[str] | None = field(default_factory=list, metadata={"help": "Label keys."})
    report_to: Any = field(default="none", metadata={"help": "Loggers."})


class DITOTrainer(AtomicCheckpointMixin, EngineMixin, Trainer):
    r"""Trains a [`DITOModel`] with its own loss ([`DITOLoss`], computed in `forward`).

    Batches come from a [`DITOCollator`] (training augmentation for the training set; the caption draw is seeded
    with `args.seed`) built from the model's config and `processing_class` (the text tower's tokenizer) unless
    `data_collator` is given. The loss's components (`image_clip`, `region_clip`, `accuracy`,
    `region_accuracy`, `logit_scale`) are averaged into each log. Random boxes are drawn in `forward` with torch's
    global generator, which `Trainer` seeds and checkpoints.

    Args:
        model (`DITOModel`): the model.
        args (`DITOTrainingArguments`, *optional*): training arguments.
        train_dataset (`Any`, *optional*): rows with an image and captions.
        eval_dataset (`Any`, *optional*): the same, for the evaluation loss.
        data_collator (`Any`, *optional*): defaults to `DITOCollator.from_config(model.config, processing_class,
            train=True)`.
        processing_class (`Any`, *optional*): the text tower's tokenizer (default: `model.tokenizer`).
    """

    def __init__(
        self,
        model: DITOModel | None = None,
        args: TrainingArguments | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        data_collator: Any = None,
        processing_class: Any = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(model, DITOModel):
            raise TypeError(f"DITOTrainer needs a DITOModel, got {type(model).__name__}.")
        if kwargs.get("peft_config") is not None:
            raise ValueError("DITOTrainer trains its towers in full; LoRA (peft_config) is not supported.")
        kwargs.pop("peft_config", None)
        args = args if args is not None else DITOTrainingArguments(output_dir="dito-output")
        require_rows(train_dataset, name="train_dataset", owner=type(self).__name__)
        require_rows(eval_dataset, name="eval_dataset", owner=type(self).__name__)
        processing_class = processing_class if processing_class is not None else model.tokenizer
        if data_collator is None:
            if processing_class is None:
                raise ValueError(
                    "DITOTrainer needs the text tower's tokenizer (processing_class=, or model.tokenizer) or a "
                    "data_collator."
                )
            data_collator = DITOCollator.from_config(
                model.config, processing_class, train=True, seed=args.seed
            )
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            data_collator=data_collator,
            processing_class=processing_class,
            **kwargs,
        )
        # the evaluation loop computes the loss of batches without label tensors (the pairs are the labels)
        self.can_return_loss = True
        self._components: dict[str, list[float]] = defaultdict(list)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if inputs.get("input_ids") is None:
            raise ValueError(
                "DITOTrainer needs captions in every batch (an 'input_ids' entry from the collator)."
            )
        outputs = model(**inputs, return_loss=True)
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


register_auto_classes(DITOConfig, DITOModel)
