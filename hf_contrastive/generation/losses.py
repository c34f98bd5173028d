"""SimCTG's training objective (Su et al. 2022) as a loss with the library's contract."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from hf_contrastive.core.losses.base import ContrastiveLoss, LossOutput

__all__ = ["SimCTGLoss", "simctg_contrastive_loss"]

_SIMCTG_CITATION = """@inproceedings{su2022contrastive,
  title     = {A Contrastive Framework for Neural Text Generation},
  author    = {Su, Yixuan and Lan, Tian and Wang, Yan and Yogatama, Dani and Kong, Lingpeng and
               Collier, Nigel},
  booktitle = {Advances in Neural Information Processing Systems},
  year      = {2022}
}"""


class SimCTGLoss(ContrastiveLoss):
    r"""SimCTG: the language-modelling loss plus a token-level contrastive margin loss (Su et al. 2022).

    On the last-layer states :math:`h_1..h_{|x|}` of each sequence :math:`x`, with cosine similarity
    :math:`s` and margin :math:`\rho`:

    .. math::
        \mathcal{L}_{CL} = \frac{1}{|x|(|x|-1)} \sum_{i} \sum_{j \ne i} \max\big(0, \rho - s(h_i, h_i) + s(h_i, h_j)\big)

    Padding positions (`attention_mask == 0`) take part in no pair; the mean runs over the valid
    pairs of the whole batch. The total is :math:`\mathcal{L}_{MLE} + \lambda\, \mathcal{L}_{CL}` when the
    language-modelling loss is given, :math:`\lambda\, \mathcal{L}_{CL}` otherwise. The term spreads token
    representations apart (isotropy), which contrastive search relies on at decoding time.
    Computed in float32 (float64 inputs stay float64).

    Args:
        margin (`float`, *optional*, defaults to 0.5):
            :math:`\rho` (the paper's value).
        contrastive_weight (`float`, *optional*, defaults to 1.0):
            :math:`\lambda`, the weight of the contrastive term (the paper adds it unweighted).

    Inputs:

        ==================  =============  ================================================
        argument            shape          meaning
        ==================  =============  ================================================
        `hidden_states`   `[B, T, D]`  last-layer token states
        `attention_mask`  `[B, T]`     optional, 1 on real tokens (None: no padding)
        `lm_loss`         scalar         keyword, optional: the model's MLE loss
        ==================  =============  ================================================

    Returns:
        [`LossOutput`] with components `contrastive` (:math:`\mathcal{L}_{CL}`, unweighted) and, when
        `lm_loss` is given, `mle`.
    """

    citation = _SIMCTG_CITATION

    def __init__(self, margin: float = 0.5, contrastive_weight: float = 1.0) -> None:
        super().__init__()
        if not (math.isfinite(margin) and margin >= 0):
            raise ValueError(f"`margin` (rho) must be >= 0, got {margin}.")
        if not (math.isfinite(contrastive_weight) and contrastive_weight >= 0):
            raise ValueError(f"`contrastive_weight` must be >= 0, got {contrastive_weight}.")
        self.margin = float(margin)
        self.contrastive_weight = float(contrastive_weight)

    def config_dict(self) -> dict[str, Any]:
        return {"margin": self.margin, "contrastive_weight": self.contrastive_weight}

    def contrastive_term(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """:math:`\\mathcal{L}_{CL}` alone, a scalar with gradient (see the class docstring)."""
        if hidden_states.ndim != 3:
            raise ValueError(
                f"`hidden_states` must be [batch, seq, dim], got shape {tuple(hidden_states.shape)}."
            )
        x = hidden_states if hidden_states.dtype == torch.float64 else hidden_states.float()
        h = nn.functional.normalize(x, dim=-1)
        sim = h @ h.transpose(1, 2)  # [B, T, T]
        gold = sim.diagonal(dim1=1, dim2=2)[:, :, None]
        loss = torch.relu(self.margin - gold + sim)
        b, t, _ = h.shape
        mask = (
            torch.ones(b, t, dtype=torch.bool, device=h.device)
            if attention_mask is None
            else attention_mask.bool()
        )
        pair = mask[:, :, None] & mask[:, None, :]
        pair &= ~torch.eye(t, dtype=torch.bool, device=h.device)[None]
        count = pair.sum()
        if count == 0:
            return loss.sum() * 0.0
        return (loss * pair).sum() / count

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        lm_loss: torch.Tensor | None = None,
    ) -> LossOutput:
        cl = self.contrastive_term(hidden_states, attention_mask)
        if lm_loss is None:
            return LossOutput(loss=self.contrastive_weight * cl, components={"contrastive": cl.detach()})
        loss = lm_loss + self.contrastive_weight * cl.to(lm_loss.dtype)
        return LossOutput(loss=loss, components={"mle": lm_loss.detach(), "contrastive": cl.detach()})


def simctg_contrastive_loss(
    hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, margin: float = 0.5
) -> torch.Tensor:
    """Token-level contrastive margin loss of SimCTG (the unweighted term of [`SimCTGLoss`]).

    Args:
        hidden_states (`torch.Tensor`): [B, T, D] last-layer token states.
        attention_mask (`torch.Tensor | None`, *optional*): [B, T] with 1 for real tokens (pairs with a padding token are ignored); None = no padding.
        margin (`float`, *optional*, defaults to `0.5`): rho (default 0.5, the paper's value).

    Returns:
        A scalar: the mean of `max(0, rho - s(h_i, h_i) + s(h_i, h_j))` over all valid pairs i != j of every
        sequence (computed in float32).
    """
    return SimCTGLoss(margin=margin).contrastive_term(hidden_states, attention_mask)
