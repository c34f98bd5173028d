"""Dense contrastive learning: contrast between parts of images (cells, regions) instead of whole images.

- `features`: a feature map from any transformers vision backbone ([`spatial_features`]), the geometry of two
  crops of one image ([`ViewGeometry`], [`TwoViewTransform`]), their positive cell pairs ([`positive_pairs`]),
  and [`dense_correspondence_score`], the dense metric the methods below are measured with;
- `pixpro`: PixPro (Xie et al. 2021), pixel propagation consistency with a momentum encoder, PixContrast and
  an instance branch ([`PixProModel`], [`PixProLoss`], [`PixProTrainer`]; recipe task `pixpro`);
- `dito`: DITO (Kim et al. 2023), region-level image-text pretraining over a ViT's simple feature pyramid with
  shifted-window learning ([`DITOModel`], [`DITOLoss`], [`DITOTrainer`]; recipe task `dito`);
- `roi_align`: torchvision's RoI-Align in plain PyTorch, and the FPN level rule.
"""

from hf_contrastive.vision.dense.dito import (
    DITOCollator,
    DITOConfig,
    DITOLoss,
    DITOModel,
    DITOOutput,
    DITOTrainer,
    DITOTrainingArguments,
)
from hf_contrastive.vision.dense.features import (
    TwoViewTransform,
    ViewGeometry,
    cell_centers,
    dense_correspondence_score,
    positive_pairs,
    spatial_features,
)
from hf_contrastive.vision.dense.pixpro import (
    PixProCollator,
    PixProConfig,
    PixProLoss,
    PixProModel,
    PixProOutput,
    PixProTrainer,
    PixProTrainingArguments,
    cosine_momentum,
)
from hf_contrastive.vision.dense.roi_align import assign_fpn_levels, roi_align

__all__ = [
    "DITOCollator",
    "DITOConfig",
    "DITOLoss",
    "DITOModel",
    "DITOOutput",
    "DITOTrainer",
    "DITOTrainingArguments",
    "PixProCollator",
    "PixProConfig",
    "PixProLoss",
    "PixProModel",
    "PixProOutput",
    "PixProTrainer",
    "PixProTrainingArguments",
    "TwoViewTransform",
    "ViewGeometry",
    "assign_fpn_levels",
    "cell_centers",
    "cosine_momentum",
    "dense_correspondence_score",
    "positive_pairs",
    "roi_align",
    "spatial_features",
]
