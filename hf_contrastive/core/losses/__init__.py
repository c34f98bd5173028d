"""Contrastive objectives as nn.Modules: embeddings in, LossOutput out.

Each loss takes embeddings (anchor `[B, D]`, positives `[B, D]` or `[B, P, D]`, hard
negatives `[B, N, D]`, optional scores or reference-encoder embeddings) and returns a
[`LossOutput`]; each carries its `citation` (BibTeX) and `config_dict()`.
Names map to losses through `hf_contrastive.core.losses.registry` (`register_loss`,
`available_losses`; `registry.build_loss(name, config, roles, model)`).
"""

from __future__ import annotations

from hf_contrastive.core.losses.base import ContrastiveLoss, LossOutput
from hf_contrastive.core.losses.cosent import CoSENTLoss
from hf_contrastive.core.losses.gradcache import GradCache
from hf_contrastive.core.losses.infonce import InfoNCELoss, MultipleNegativesRankingLoss
from hf_contrastive.core.losses.moco import MomentumContrastLoss
from hf_contrastive.core.losses.multicsr import MultiCSRLoss
from hf_contrastive.core.losses.registry import LossSpec, available_losses, get_loss_spec, register_loss
from hf_contrastive.core.losses.regression import EmbeddingRegressionLoss
from hf_contrastive.core.losses.simcse import SupervisedSimCSELoss, UnsupervisedSimCSELoss, split_views

__all__ = [
    "CoSENTLoss",
    "ContrastiveLoss",
    "EmbeddingRegressionLoss",
    "GradCache",
    "InfoNCELoss",
    "LossOutput",
    "LossSpec",
    "MomentumContrastLoss",
    "MultiCSRLoss",
    "MultipleNegativesRankingLoss",
    "SupervisedSimCSELoss",
    "UnsupervisedSimCSELoss",
    "available_losses",
    "get_loss_spec",
    "register_loss",
    "split_views",
]
