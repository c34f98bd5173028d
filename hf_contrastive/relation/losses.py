"""TKRE's span-level contrastive loss (SCL), with the library's loss contract."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from hf_contrastive.core.losses.base import ContrastiveLoss, LossOutput

__all__ = ["SpanContrastiveLoss"]

_TKRE_CITATION = """@inproceedings{guo2025tkre,
  title     = {Bridging Generative and Discriminative Learning: Few-Shot Relation Extraction via
               Two-Stage Knowledge-Guided Pre-training},
  author    = {Guo, Quanjiang and Zhang, Jinchuan and Wang, Sijie and Tian, Ling and Kang, Zhao and
               Yan, Bin and Xiao, Weidong},
  booktitle = {Proceedings of the Thirty-Fourth International Joint Conference on Artificial
               Intelligence (IJCAI-25)},
  pages     = {8068--8076},
  year      = {2025},
  doi       = {10.24963/ijcai.2025/897}
}"""


class SpanContrastiveLoss(ContrastiveLoss):
    r"""TKRE's span-level contrastive loss: a relation anchor against its positive and negative span.

    For example :math:`i` with relation :math:`y_i`, the learned anchor :math:`a_{y_i}`, the positive
    span embedding :math:`p_i` (mean-pooled relation span) and the negative span embedding :math:`n_i`
    (a random 1-3 token span outside the entities), all L2-normalised after projection:

    .. math::
        \ell_i = -\log \frac{e^{a_{y_i} \cdot p_i / \tau}}{e^{a_{y_i} \cdot p_i / \tau} + e^{a_{y_i} \cdot n_i / \tau}}

    averaged over the examples that have a negative (`valid`). With `anchor_negatives=True` the
    other relations' anchors join the denominator as well (:math:`e^{a_r \cdot p_i / \tau}` for
    :math:`r \ne y_i`), which also pushes the anchors of different relations apart; the paper's form
    (`False`) is the default. Computed in float32 (float64 inputs stay float64).

    Paper: Guo et al. 2025 (TKRE, IJCAI), temperature 0.1.

    Args:
        temperature (`float`, *optional*, defaults to 0.1):
            :math:`\tau`.
        anchor_negatives (`bool`, *optional*, defaults to `False`):
            Add the other relations' anchors as negatives of each positive span.

    Inputs:

        ==============  ==========  ==================================================
        argument        shape       meaning
        ==============  ==========  ==================================================
        `anchors`     `[R, D]`  the learned anchor of every relation
        `positives`   `[B, D]`  projected relation-span embedding of each example
        `negatives`   `[B, D]`  projected negative-span embedding of each example
        `labels`      `[B]`     relation index of each example, in `[0, R)`
        `valid`       `[B]`     optional bool: rows that have a negative span
        ==============  ==========  ==================================================

    Returns:
        [`LossOutput`] with components `scl` and `scl_pos_gt_neg` (fraction of valid rows whose
        positive out-scores the negative; absent when no row is valid, where the loss is a zero that
        keeps the graph).
    """

    citation = _TKRE_CITATION

    def __init__(self, temperature: float = 0.1, anchor_negatives: bool = False) -> None:
        super().__init__()
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}.")
        self.temperature = float(temperature)
        self.anchor_negatives = bool(anchor_negatives)

    def config_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "anchor_negatives": self.anchor_negatives}

    def forward(
        self,
        anchors: torch.Tensor,
        positives: torch.Tensor,
        negatives: torch.Tensor,
        labels: torch.Tensor,
        valid: torch.Tensor | None = None,
    ) -> LossOutput:
        if positives.shape != negatives.shape or positives.dim() != 2:
            raise ValueError(
                f"positives and negatives must both be [B, D]; got {tuple(positives.shape)} and {tuple(negatives.shape)}."
            )
        if anchors.dim() != 2 or anchors.shape[1] != positives.shape[1]:
            raise ValueError(f"anchors must be [R, {positives.shape[1]}], got {tuple(anchors.shape)}.")
        if labels.shape != positives.shape[:1]:
            raise ValueError(f"labels must be [B] = [{positives.shape[0]}], got {tuple(labels.shape)}.")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= anchors.shape[0]):
            raise ValueError(f"labels must be relation indices in [0, {anchors.shape[0]}).")
        dtype = torch.float64 if positives.dtype == torch.float64 else torch.float32
        a = F.normalize(anchors.to(dtype), dim=-1)
        p = F.normalize(positives.to(dtype), dim=-1)
        n = F.normalize(negatives.to(dtype), dim=-1)
        own = a[labels]
        pos = (own * p).sum(-1) / self.temperature
        neg = (own * n).sum(-1) / self.temperature
        logits = [pos.unsqueeze(1), neg.unsqueeze(1)]
        if self.anchor_negatives and a.shape[0] > 1:
            others = (p @ a.T) / self.temperature  # [B, R]
            others = others.masked_fill(F.one_hot(labels, a.shape[0]).bool(), float("-inf"))
            logits.append(others)
        per_row = -torch.log_softmax(torch.cat(logits, dim=1), dim=1)[:, 0]
        if valid is None:
            valid = torch.ones_like(labels, dtype=torch.bool)
        if not bool(valid.any()):
            zero = positives.sum() * 0.0
            return LossOutput(loss=zero, components={"scl": zero.detach()})
        loss = per_row[valid].mean()
        acc = (pos > neg)[valid].to(dtype).mean()
        return LossOutput(loss=loss, components={"scl": loss.detach(), "scl_pos_gt_neg": acc.detach()})
