"""The span-level objectives of faithful summarisation (unlikelihood, gradient ascent, NLL) as a loss.

With `m_t = 1` on summary tokens inside an unfaithful span, `p_t` the model's probability of the label
at position `t`, `N` the normaliser and weight `eps`:

- `unlikelihood`:     `L = (-sum (1-m_t) log p_t - eps * sum m_t log(1 - p_t)) / N`;
- `gradient_ascent`:  `L = (-sum (1-m_t) log p_t + eps * sum m_t max(log p_t, floor)) / N`;
- `nll`:              `L = -sum (1-m_t) log p_t / N`.

The span term can weight each span token by `w_t` (`span_weighting`; no gradient flows through `w_t`):
`L = (-sum (1-m_t) log p_t - eps * sum m_t w_t log(1 - p_t)) / N` for unlikelihood (and `w_t` on the floored
`log p_t` for gradient ascent). `uniform` (`w_t = 1`, the paper's formula) is the default.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from hf_contrastive.core.losses.base import ContrastiveLoss, LossOutput

__all__ = [
    "OBJECTIVES",
    "SPAN_WEIGHTINGS",
    "SpanUnlikelihoodLoss",
    "safe_log1m_exp",
    "span_objective",
    "span_weights",
]

OBJECTIVES = ("unlikelihood", "gradient_ascent", "nll")
SPAN_WEIGHTINGS = ("uniform", "position", "inverse_prob")

_SPAN_CITATION = """@article{huang2025enhancing,
  title   = {Enhancing Faithfulness in Abstractive Summarization via Span-Level Fine-Tuning},
  author  = {Huang, Sicong and Yan, Qianqi and Wang, Shengze and Lane, Ian},
  journal = {arXiv preprint arXiv:2510.09915},
  year    = {2025}
}"""

_UNLIKELIHOOD_CITATION = """@inproceedings{welleck2020neural,
  title     = {Neural Text Generation With Unlikelihood Training},
  author    = {Welleck, Sean and Kulikov, Ilia and Roller, Stephen and Dinan, Emily and Cho, Kyunghyun and
               Weston, Jason},
  booktitle = {International Conference on Learning Representations},
  year      = {2020}
}"""


def safe_log1m_exp(log_p: torch.Tensor, clamp: float = 1e-5) -> torch.Tensor:
    """`log(1 - p)` from `log p` without cancellation: `log(max(-expm1(log p), clamp))`.

    `-expm1(x)` is exact near `x = 0` (`p -> 1`), where `1 - exp(x)` would round to 0. `clamp` (the
    lower bound on `1 - p`, 1e-5 as in Welleck et al. 2019) keeps the value and its gradient finite.
    """
    if clamp <= 0:
        raise ValueError(f"`clamp` must be > 0, got {clamp}.")
    return torch.log((-torch.expm1(log_p.clamp(max=0.0))).clamp(min=clamp))


def span_weights(
    log_probs: torch.Tensor, span: torch.Tensor, weighting: str = "uniform", max_weight: float = 1e4
) -> torch.Tensor:
    r"""Per-token weights :math:`w_t` of the span term (detached; 0 off the span tokens).

    * `"uniform"`: :math:`w_t = 1`;
    * `"position"`: :math:`w_t = 1/k` for the :math:`k`-th token of a run of consecutive span tokens
      (:math:`k = 1` on the first). The first token is where the model commits to the unfaithful content; the
      later ones are mostly forced sub-word continuations with :math:`p` near 1, whose :math:`-\log(1-p)`
      is large and whose push breaks continuations rather than the choice. Two adjacent spans count as one run.
    * `"inverse_prob"`: :math:`w_t = \min(1 / p_t, w_{max})` with :math:`p_t` the model's own (detached)
      probability, i.e. the reference's at the start of training. The gradient of
      :math:`-w_t \log(1 - p_t)` with respect to :math:`\log p_t` is then :math:`1/(1-p_t)` instead of
      :math:`p_t/(1-p_t)`: the push no longer vanishes on rare tokens, until :math:`p_t < 1/w_{max}`.

    Args:
        log_probs (`torch.Tensor`): `[B, T]` log-probability of each label.
        span (`torch.Tensor`): `[B, T]` bool, True on (labelled) span tokens.
        weighting (`str`, *optional*, defaults to `"uniform"`): one of `SPAN_WEIGHTINGS`.
        max_weight (`float`, *optional*, defaults to 1e4): :math:`w_{max}` of `"inverse_prob"` (>= 1).

    Returns:
        `torch.Tensor`: `[B, T]` weights in the dtype of `log_probs`.
    """
    if weighting not in SPAN_WEIGHTINGS:
        raise ValueError(f"Unknown span weighting {weighting!r}; expected one of {SPAN_WEIGHTINGS}.")
    if max_weight < 1:
        raise ValueError(f"`max_weight` must be >= 1, got {max_weight}.")
    span = span.bool()
    log_probs = log_probs.detach()
    if weighting == "uniform":
        weights = torch.ones_like(log_probs)
    elif weighting == "position":
        idx = torch.arange(span.shape[-1], device=span.device).expand_as(span)
        last_off = torch.where(span, torch.full_like(idx, -1), idx).cummax(dim=-1).values
        weights = 1.0 / (idx - last_off).to(log_probs.dtype)
    else:
        weights = torch.exp(-log_probs.clamp(max=0.0)).clamp(max=max_weight)
    return torch.where(span, weights, torch.zeros_like(weights))


class SpanUnlikelihoodLoss(ContrastiveLoss):
    r"""Span-level objective for faithful summarisation (Huang et al. 2025) on per-label log-probabilities.

    With :math:`m_t = 1` on labelled tokens inside an unfaithful span, :math:`p_t` the probability of the
    label at position :math:`t`, :math:`N` the normaliser and weight :math:`\epsilon`:

    * `"unlikelihood"` (the paper's best; Welleck et al. 2019):
      :math:`\mathcal{L} = \frac{1}{N}\big(-\sum_t (1-m_t) \log p_t - \epsilon \sum_t m_t \log(1 - p_t)\big)`,
      with :math:`\log(1-p)` computed by [`safe_log1m_exp`] and :math:`1-p` clamped at `unlikelihood_clamp`;
    * `"gradient_ascent"`:
      :math:`\mathcal{L} = \frac{1}{N}\big(-\sum_t (1-m_t) \log p_t + \epsilon \sum_t m_t \max(\log p_t, f)\big)`
      with the floor :math:`f` = `log_prob_floor` (the ascent term is unbounded below; under the floor it
      has no gradient);
    * `"nll"`: :math:`\mathcal{L} = -\frac{1}{N} \sum_t (1-m_t) \log p_t` (likelihood of the faithful tokens
      only; without spans, ordinary supervised fine-tuning).

    With `span_weighting` other than `"uniform"`, each span token's term is multiplied by a detached weight
    :math:`w_t` (see [`span_weights`]): :math:`-\epsilon \sum_t m_t w_t \log(1 - p_t)`.

    Args:
        objective (`str`, *optional*, defaults to `"unlikelihood"`):
            One of `"unlikelihood"`, `"gradient_ascent"`, `"nll"`.
        eps (`float`, *optional*, defaults to 1.0):
            :math:`\epsilon`, the weight of the span term (>= 0; unused by `"nll"`).
        log_prob_floor (`float`, *optional*, defaults to `log(1e-5)`):
            :math:`f`, the floor on :math:`\log p` of the gradient-ascent term (< 0).
        unlikelihood_clamp (`float`, *optional*, defaults to 1e-5):
            Lower bound on :math:`1 - p` inside :math:`\log(1 - p)`, in (0, 1).
        span_weighting (`str`, *optional*, defaults to `"uniform"`):
            Per-token weight of the span term: `"uniform"` (1, the paper's formula), `"position"` (1/k on the
            k-th token of a span) or `"inverse_prob"` (1/p, capped at `span_weight_max`); see [`span_weights`].
        span_weight_max (`float`, *optional*, defaults to 1e4):
            Cap of the `"inverse_prob"` weight (>= 1).

    Inputs:

        ===================  ==========  ==================================================================
        argument             shape       meaning
        ===================  ==========  ==================================================================
        `log_probs`        `[B, T]`  log-probability of each label (any value where not labelled)
        `label_mask`       `[B, T]`  bool, True on labelled tokens
        `unfaithful_mask`  `[B, T]`  0/1, 1 on tokens inside an unfaithful span (ignored if unlabelled)
        `num_items`        scalar      keyword: :math:`N` (default: the labelled tokens, at least 1)
        ===================  ==========  ==================================================================

    Returns:
        [`LossOutput`] (computed in float32; float64 inputs stay float64) with components `faithful_nll`
        and `span_term` (the two sums divided by :math:`N`: `loss = faithful_nll + eps * span_term`),
        `num_span_tokens` and, when there are span tokens, `span_log_prob` (their mean :math:`\log p`).
    """

    citation = _SPAN_CITATION + "\n" + _UNLIKELIHOOD_CITATION

    def __init__(
        self,
        objective: str = "unlikelihood",
        eps: float = 1.0,
        log_prob_floor: float = math.log(1e-5),
        unlikelihood_clamp: float = 1e-5,
        span_weighting: str = "uniform",
        span_weight_max: float = 1e4,
    ) -> None:
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"Unknown objective {objective!r}; expected one of {OBJECTIVES}.")
        if eps < 0:
            raise ValueError(f"`eps` must be >= 0, got {eps}.")
        if unlikelihood_clamp <= 0:
            raise ValueError(f"`unlikelihood_clamp` must be > 0, got {unlikelihood_clamp}.")
        if span_weighting not in SPAN_WEIGHTINGS:
            raise ValueError(f"Unknown span_weighting {span_weighting!r}; expected one of {SPAN_WEIGHTINGS}.")
        if span_weight_max < 1:
            raise ValueError(f"`span_weight_max` must be >= 1, got {span_weight_max}.")
        self.span_weighting = span_weighting
        self.span_weight_max = float(span_weight_max)
        self.objective = objective
        self.eps = float(eps)
        self.log_prob_floor = float(log_prob_floor)
        self.unlikelihood_clamp = float(unlikelihood_clamp)

    def config_dict(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "eps": self.eps,
            "log_prob_floor": self.log_prob_floor,
            "unlikelihood_clamp": self.unlikelihood_clamp,
            "span_weighting": self.span_weighting,
            "span_weight_max": self.span_weight_max,
        }

    def forward(
        self,
        log_probs: torch.Tensor,
        label_mask: torch.Tensor,
        unfaithful_mask: torch.Tensor,
        *,
        num_items: torch.Tensor | int | None = None,
    ) -> LossOutput:
        if log_probs.shape != label_mask.shape or log_probs.shape != unfaithful_mask.shape:
            raise ValueError(
                f"log_probs {tuple(log_probs.shape)}, label_mask {tuple(label_mask.shape)} and unfaithful_mask "
                f"{tuple(unfaithful_mask.shape)} must have the same shape."
            )
        log_probs = log_probs if log_probs.dtype == torch.float64 else log_probs.float()
        valid = label_mask.bool()
        span = unfaithful_mask.bool() & valid
        faithful = valid & ~span
        denom = (
            valid.sum().clamp(min=1)
            if num_items is None
            else torch.as_tensor(num_items, device=log_probs.device)
        )
        denom = denom.to(log_probs.dtype).clamp(min=1)
        zero = log_probs.new_zeros(())
        faithful_nll = -torch.where(faithful, log_probs, zero).sum() / denom
        weights = span_weights(log_probs, span, self.span_weighting, self.span_weight_max)
        if self.objective == "unlikelihood":
            span_sum = -torch.where(
                span, weights * safe_log1m_exp(log_probs, self.unlikelihood_clamp), zero
            ).sum()
        elif self.objective == "gradient_ascent":
            span_sum = torch.where(span, weights * log_probs.clamp(min=self.log_prob_floor), zero).sum()
        else:
            span_sum = zero * log_probs.sum()
        span_term = span_sum / denom
        loss = faithful_nll + self.eps * span_term if self.objective != "nll" else faithful_nll + span_term
        n_span = span.sum()
        components = {
            "faithful_nll": faithful_nll.detach(),
            "span_term": span_term.detach(),
            "num_span_tokens": n_span.detach(),
        }
        if n_span > 0:
            components["span_log_prob"] = torch.where(span, log_probs, zero).sum().detach() / n_span
        return LossOutput(loss=loss, components=components)


def span_objective(
    log_probs: torch.Tensor,
    label_mask: torch.Tensor,
    unfaithful_mask: torch.Tensor,
    objective: str = "unlikelihood",
    eps: float = 1.0,
    num_items: torch.Tensor | int | None = None,
    log_prob_floor: float = math.log(1e-5),
    unlikelihood_clamp: float = 1e-5,
    span_weighting: str = "uniform",
    span_weight_max: float = 1e4,
) -> dict[str, torch.Tensor]:
    """The span-level objective from per-label log-probabilities, as a dict (see [`SpanUnlikelihoodLoss`]).

    Args:
        log_probs (`torch.Tensor`): `[B, T]` log-probability of each label (any value where `label_mask` is 0).
        label_mask (`torch.Tensor`): `[B, T]` bool, True on labelled tokens.
        unfaithful_mask (`torch.Tensor`): `[B, T]` 0/1, 1 on tokens inside an unfaithful span (ignored where not labelled).
        objective (`str`, *optional*, defaults to `"unlikelihood"`): `"unlikelihood"`, `"gradient_ascent"` or `"nll"`.
        eps (`float`, *optional*, defaults to `1.0`): weight of the span term (>= 0).
        num_items (`torch.Tensor | int | None`, *optional*): the normaliser `N` (default: the number of labelled tokens, at least 1).
        log_prob_floor (`float`, *optional*, defaults to `math.log(1e-05)`): floor on `log p` in the gradient ascent term.
        unlikelihood_clamp (`float`, *optional*, defaults to `1e-05`): lower bound on `1 - p` in the unlikelihood term.
        span_weighting (`str`, *optional*, defaults to `"uniform"`): per-token weight of the span term (see [`span_weights`]).
        span_weight_max (`float`, *optional*, defaults to `1e4`): cap of the `"inverse_prob"` weight.

    Returns:
        dict with `loss` (scalar), `faithful_nll` and `span_term` (the two sums divided by `N`, so
        `loss = faithful_nll + eps * span_term` for unlikelihood/gradient ascent), `span_log_prob` (mean
        `log p` over span tokens, detached; NaN without span tokens) and `num_span_tokens`.
    """
    loss_fn = SpanUnlikelihoodLoss(
        objective, eps, log_prob_floor, unlikelihood_clamp, span_weighting, span_weight_max
    )
    out = loss_fn(log_probs, label_mask, unfaithful_mask, num_items=num_items)
    terms = {"loss": out.loss, **out.components}
    terms.setdefault("span_log_prob", out.loss.new_tensor(float("nan")).detach())
    return terms
