"""Reranker objectives on grouped scores, as losses with the library's contract.

A training group is one query with one relevant document followed by `n` irrelevant ones, so
scores come as `[G, 1 + n]` with the relevant document in column 0.

Each objective is an `nn.Module` ([`PointwiseBCELoss`], [`ListwiseInfoNCELoss`], [`YesNoSFTLoss`])
whose `forward` returns a [`~hf_contrastive.core.losses.LossOutput`]; the functions
`pointwise_bce_loss`, `listwise_infonce_loss` and `yes_no_sft_loss` return the same scalar.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from hf_contrastive.core.losses.base import ContrastiveLoss, LossOutput

__all__ = [
    "ListwiseInfoNCELoss",
    "PointwiseBCELoss",
    "YesNoSFTLoss",
    "listwise_infonce_loss",
    "pointwise_bce_loss",
    "yes_no_sft_loss",
]

_MONOBERT_CITATION = """@article{nogueira2019passage,
  title   = {Passage Re-ranking with {BERT}},
  author  = {Nogueira, Rodrigo and Cho, Kyunghyun},
  journal = {arXiv preprint arXiv:1901.04085},
  year    = {2019}
}"""

_LCE_CITATION = """@inproceedings{gao2021rethink,
  title     = {Rethink Training of {BERT} Rerankers in Multi-Stage Retrieval Pipeline},
  author    = {Gao, Luyu and Dai, Zhuyun and Callan, Jamie},
  booktitle = {Advances in Information Retrieval (ECIR 2021)},
  year      = {2021}
}"""

_SFT_VS_CL_CITATION = """@article{dai2025supervised,
  title   = {Supervised Fine-Tuning or Contrastive Learning? Towards Better Multimodal {LLM} Reranking},
  author  = {Dai, Ziqi and Zhang, Xin and Li, Mingxin and Zhang, Yanzhao and Long, Dingkun and
             Xie, Pengjun and Zhang, Meishan and Li, Wenjie and Zhang, Min},
  journal = {arXiv preprint arXiv:2510.14824},
  year    = {2025}
}"""


def _check_groups(scores: torch.Tensor) -> None:
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(
            f"Expected grouped scores [groups, 1 + negatives] with at least one negative, got {tuple(scores.shape)}."
        )


def _check_pos_weight(pos_weight: float | None) -> None:
    if pos_weight is not None and not (
        isinstance(pos_weight, (int, float)) and math.isfinite(pos_weight) and pos_weight > 0
    ):
        raise ValueError(f"pos_weight must be a finite number > 0 or None, got {pos_weight!r}.")


class PointwiseBCELoss(ContrastiveLoss):
    r"""Pointwise binary cross-entropy of relevance logits (monoBERT, Nogueira & Cho 2019).

    For logits :math:`s_i` and 0/1 labels :math:`y_i`, with :math:`w` the positive weight:

    .. math::
        \mathcal{L} = -\frac{1}{N} \sum_i \big[ w\, y_i \log \sigma(s_i) + (1 - y_i) \log (1 - \sigma(s_i)) \big]

    Args:
        pos_weight (`float`, *optional*, defaults to `None`):
            :math:`w`, the weight of the positive term (e.g. the number of negatives per positive, to
            balance a 1:n group). `None` means 1.

    Inputs:

        ==============  ========  ==========================================
        argument        shape     meaning
        ==============  ========  ==========================================
        `logits`      `[N]`   relevance logit of each (query, document)
        `labels`      `[N]`   1 relevant, 0 not (float or int)
        `pos_weight`  scalar    keyword, overrides the constructor's value
        ==============  ========  ==========================================

    Returns:
        [`LossOutput`] with component `bce`. Computed in float32 (float64 inputs stay float64).
    """

    citation = _MONOBERT_CITATION

    def __init__(self, pos_weight: float | None = None) -> None:
        super().__init__()
        _check_pos_weight(pos_weight)
        self.pos_weight = None if pos_weight is None else float(pos_weight)

    def config_dict(self) -> dict[str, Any]:
        return {"pos_weight": self.pos_weight}

    def forward(
        self, logits: torch.Tensor, labels: torch.Tensor, *, pos_weight: float | None = None
    ) -> LossOutput:
        if logits.shape != labels.shape:
            raise ValueError(
                f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} differ in shape."
            )
        _check_pos_weight(pos_weight)
        weight = self.pos_weight if pos_weight is None else float(pos_weight)
        x = logits.double() if logits.dtype == torch.float64 else logits.float()
        w = None if weight is None else torch.tensor(weight, device=logits.device, dtype=x.dtype)
        loss = F.binary_cross_entropy_with_logits(x, labels.to(x.dtype), pos_weight=w)
        return LossOutput(loss=loss, components={"bce": loss.detach()})


class ListwiseInfoNCELoss(ContrastiveLoss):
    r"""InfoNCE over each group of one relevant and `n` irrelevant documents.

    For the scores :math:`s_{g,0..n}` of group :math:`g` (relevant document in column 0) and
    temperature :math:`\tau`:

    .. math::
        \mathcal{L} = -\frac{1}{G} \sum_g \log \frac{e^{s_{g,0}/\tau}}{\sum_{k=0}^{n} e^{s_{g,k}/\tau}}

    The cross-encoder's listwise objective (localised contrastive estimation, Gao et al. 2021) and, on
    the "yes" logits, the LLM reranker's contrastive (CL) objective (Dai et al. 2025).

    Args:
        temperature (`float`, *optional*, defaults to 1.0):
            :math:`\tau`; the scores are unbounded logits, so 1.0 is the natural choice.

    Inputs:
        `scores` `[G, 1 + n]` (`n >= 1`), relevant document first.

    Returns:
        [`LossOutput`] with components `infonce` and `acc` (fraction of groups whose relevant
        document out-scores every other).
    """

    citation = _LCE_CITATION + "\n" + _SFT_VS_CL_CITATION

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        self.temperature = float(temperature)

    def config_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

    def forward(self, scores: torch.Tensor) -> LossOutput:
        _check_groups(scores)
        x = scores.double() if scores.dtype == torch.float64 else scores.float()
        target = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        loss = F.cross_entropy(x / self.temperature, target)
        acc = (x[:, :1] > x[:, 1:]).all(dim=1).to(x.dtype).mean()
        return LossOutput(loss=loss, components={"infonce": loss.detach(), "acc": acc.detach()})


class YesNoSFTLoss(ContrastiveLoss):
    r"""Pointwise SFT loss of the LLM yes/no reranker (Dai et al. 2025).

    Cross-entropy of :math:`\mathrm{softmax}([z_{no}, z_{yes}])` against the label (1 = the answer is
    "yes"), averaged over the pairs:

    .. math::
        \mathcal{L} = -\frac{1}{N} \sum_i \log \frac{e^{z_{i, y_i}}}{e^{z_{i,no}} + e^{z_{i,yes}}}

    Inputs:

        =================  ==========  ======================================
        argument           shape       meaning
        =================  ==========  ======================================
        `yes_no_logits`  `[N, 2]`  next-token logits of "no" and "yes"
        `labels`         `[N]`     1 relevant ("yes"), 0 not ("no")
        =================  ==========  ======================================

    Returns:
        [`LossOutput`] with component `sft`.
    """

    citation = _SFT_VS_CL_CITATION

    def config_dict(self) -> dict[str, Any]:
        return {"classes": ["no", "yes"]}

    def forward(self, yes_no_logits: torch.Tensor, labels: torch.Tensor) -> LossOutput:
        if yes_no_logits.ndim != 2 or yes_no_logits.shape[1] != 2:
            raise ValueError(f"Expected (no, yes) logits of shape [N, 2], got {tuple(yes_no_logits.shape)}.")
        x = yes_no_logits.double() if yes_no_logits.dtype == torch.float64 else yes_no_logits.float()
        loss = F.cross_entropy(x, labels.long())
        return LossOutput(loss=loss, components={"sft": loss.detach()})


def pointwise_bce_loss(
    logits: torch.Tensor, labels: torch.Tensor, pos_weight: float | None = None
) -> torch.Tensor:
    """Binary cross-entropy of relevance logits `[N]` against 0/1 labels `[N]` (monoBERT).

    `pos_weight` rescales the positive term (e.g. the number of negatives per positive, to
    balance a 1:n group). The scalar of [`PointwiseBCELoss`].
    """
    return PointwiseBCELoss(pos_weight)(logits, labels).loss


def listwise_infonce_loss(scores: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """InfoNCE over each group: `-log softmax(scores / temperature)[:, 0]`, averaged over groups.

    Used by the cross-encoder's listwise objective and, on the "yes" logits, by the LLM
    reranker's contrastive (CL) objective. The scalar of [`ListwiseInfoNCELoss`].
    """
    return ListwiseInfoNCELoss(temperature)(scores).loss


def yes_no_sft_loss(yes_no_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Pointwise SFT loss of the LLM reranker: cross-entropy of `softmax([no, yes])` against the
    label (1 = the answer is "yes"). `yes_no_logits` is `[N, 2]` in (no, yes) order. The scalar of
    [`YesNoSFTLoss`]."""
    return YesNoSFTLoss()(yes_no_logits, labels).loss
