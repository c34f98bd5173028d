"""The Text2Token objective: KL divergence from a target token distribution to the vocabulary distribution of the
pooled representation (An et al. 2025)."""

from __future__ import annotations

import math
from typing import Any

import torch

from hf_contrastive.core.losses.base import ContrastiveLoss, LossOutput, check_2d, upcast
from hf_contrastive.core.losses.registry import register_loss

__all__ = ["TEXT2TOKEN_CITATION", "TOKEN_TARGETS_LAYOUT", "Text2TokenLoss"]

TOKEN_TARGETS_LAYOUT = "token_targets"
"""The data layout of the loss: texts with sparse target distributions (`target_ids`, `target_weights`)."""

TEXT2TOKEN_CITATION = """@article{an2025text2token,
  title   = {Text2Token: Unsupervised Text Representation Learning with Token Target Prediction},
  author  = {An, Ruize and Zhang, Richong and Nie, Zhijie and Wu, Zhanyu and Zhang, Yanzhao and Long, Dingkun},
  journal = {arXiv preprint arXiv:2510.10224},
  year    = {2025}
}"""


class Text2TokenLoss(ContrastiveLoss):
    r"""Token target prediction: `KL(t || softmax(pooled @ W^T (+ b)) / temperature)`, averaged over texts.

    For text `i` with sparse target `t_i` (ids `v`, weights `t_iv` summing to one) and vocabulary log-probabilities
    `log p_i = log_softmax((h_i W^T + b) / temperature)`:

        KL_i = sum_v t_iv (log t_iv - log p_iv),    loss = mean_i KL_i.

    Only the target ids enter the sum (`t log t` is 0 where `t` is 0); the log-softmax runs over the whole
    vocabulary in float32 (float64 inputs stay float64).

    Args:
        temperature (`float`, *optional*, defaults to `1.0`):
            Divides the vocabulary logits (1.0: the LM head as it is).
        detach_projection (`bool`, *optional*, defaults to `False`):
            Stop the gradient into `W` and `b`: only the representation learns from this loss (a tied embedding
            matrix then changes only through the encoder's input side).

    Returns:
        [`LossOutput`] with components `kl` (the loss), `target_entropy`, `cross_entropy` (`kl + target_entropy`)
        and `target_mass` (mean probability the model puts on the target ids).
    """

    citation = TEXT2TOKEN_CITATION

    def __init__(self, temperature: float = 1.0, detach_projection: bool = False) -> None:
        super().__init__()
        if not (
            isinstance(temperature, (int, float))
            and not isinstance(temperature, bool)
            and math.isfinite(temperature)
            and temperature > 0
        ):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}.")
        self.temperature = float(temperature)
        self.detach_projection = bool(detach_projection)

    def config_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "detach_projection": self.detach_projection}

    def forward(
        self,
        pooled: torch.Tensor,
        projection_weight: torch.Tensor,
        target_ids: torch.Tensor,
        target_weights: torch.Tensor,
        projection_bias: torch.Tensor | None = None,
    ) -> LossOutput:
        """Compute the loss.

        Args:
            pooled (`torch.Tensor` of shape `(batch_size, hidden_size)`):
                Pooled representations.
            projection_weight (`torch.Tensor` of shape `(vocab_size, hidden_size)`):
                The vocabulary projection (LM head or tied input embeddings).
            target_ids (`torch.LongTensor` of shape `(batch_size, k)`):
                Target token ids of each row, padded with any valid id where the weight is 0.
            target_weights (`torch.Tensor` of shape `(batch_size, k)`):
                Their weights: >= 0, summing to one per row, unique ids among the positive ones.
            projection_bias (`torch.Tensor` of shape `(vocab_size,)`, *optional*):
                Bias of the vocabulary logits.
        """
        owner = type(self).__name__
        check_2d("pooled", pooled, owner)
        check_2d("projection_weight", projection_weight, owner)
        vocab, hidden = projection_weight.shape
        if pooled.shape[1] != hidden:
            raise ValueError(
                f"{owner}: pooled vectors have size {pooled.shape[1]} but the vocabulary projection takes size "
                f"{hidden}."
            )
        if projection_bias is not None and tuple(projection_bias.shape) != (vocab,):
            raise ValueError(
                f"{owner}: projection_bias must have shape ({vocab},), got {tuple(projection_bias.shape)}."
            )
        self._check_targets(target_ids, target_weights, pooled.shape[0], vocab)
        self._check_finite(pooled=pooled)

        weight = projection_weight.detach() if self.detach_projection else projection_weight
        bias = projection_bias
        if bias is not None and self.detach_projection:
            bias = bias.detach()
        h = upcast(pooled)
        dtype = torch.promote_types(h.dtype, upcast(weight).dtype)
        logits = h.to(dtype) @ weight.to(dtype).T
        if bias is not None:
            logits = logits + bias.to(dtype)
        log_probs = torch.log_softmax(logits / self.temperature, dim=-1)
        t = target_weights.to(device=log_probs.device, dtype=dtype)
        chosen = log_probs.gather(1, target_ids.to(log_probs.device))
        entropy = -torch.special.xlogy(t, t).sum(dim=1)
        cross = -(t * chosen).sum(dim=1)
        kl = cross - entropy
        loss = kl.mean()
        with torch.no_grad():
            mass = (chosen.exp() * (t > 0)).sum(dim=1).mean()
        return LossOutput(
            loss=loss,
            components={
                "kl": loss.detach(),
                "target_entropy": entropy.mean().detach(),
                "cross_entropy": cross.mean().detach(),
                "target_mass": mass,
            },
        )

    @staticmethod
    def _check_targets(ids: torch.Tensor, weights: torch.Tensor, rows: int, vocab: int) -> None:
        owner = "Text2TokenLoss"
        if not isinstance(ids, torch.Tensor) or not isinstance(weights, torch.Tensor):
            raise TypeError(f"{owner}: target_ids and target_weights must be tensors.")
        if ids.dim() != 2 or ids.shape != weights.shape:
            raise ValueError(
                f"{owner}: target_ids and target_weights must both have shape (batch_size, k), got "
                f"{tuple(ids.shape)} and {tuple(weights.shape)}."
            )
        if ids.shape[0] != rows:
            raise ValueError(f"{owner}: {rows} pooled rows but {ids.shape[0]} rows of targets.")
        if ids.dtype not in (torch.int64, torch.int32) or not weights.is_floating_point():
            raise TypeError(
                f"{owner}: target_ids must be integer and target_weights floating-point, got {ids.dtype} and "
                f"{weights.dtype}."
            )
        if ids.numel() == 0:
            raise ValueError(f"{owner}: every row needs at least one target token, got k = 0.")
        w = weights.detach()
        flags = torch.stack(
            [
                ((ids < 0) | (ids >= vocab)).any(),
                (~torch.isfinite(w) | (w < 0)).any(),
            ]
        ).tolist()
        if flags[0]:
            bad = ids[(ids < 0) | (ids >= vocab)]
            raise ValueError(
                f"{owner}: target id {int(bad[0])} lies outside the vocabulary; expected ids in [0, {vocab})."
            )
        if flags[1]:
            raise ValueError(f"{owner}: target weights must be finite and >= 0.")
        sums = w.double().sum(dim=1)
        tolerance = max(1e-6, 8 * ids.shape[1] * torch.finfo(w.dtype).eps)
        off = (sums - 1.0).abs() > tolerance
        if bool(off.any()):
            row = int(off.nonzero()[0, 0])
            raise ValueError(
                f"{owner}: the target weights of row {row} sum to {float(sums[row]):.6g}; each row must be a "
                "distribution (sum 1). Normalise the targets, or check that no row is empty."
            )
        if ids.shape[1] > 1:
            keyed = torch.where(w > 0, ids, -1 - torch.arange(ids.shape[1], device=ids.device))
            ordered = keyed.sort(dim=1).values
            if bool((ordered[:, 1:] == ordered[:, :-1]).any()):
                raise ValueError(
                    f"{owner}: a row repeats a target id with positive weight; ids must be unique."
                )


def _get(config: Any, name: str, default: Any) -> Any:
    value = getattr(config, name, None) if config is not None else None
    return default if value is None else value


@register_loss("text2token", layouts=(TOKEN_TARGETS_LAYOUT,))
def _build_text2token(config: Any, roles: Any, model: Any) -> Text2TokenLoss:
    """Text2Token: KL from target token distributions to the vocabulary projection of the pooled representation."""
    return Text2TokenLoss(
        temperature=_get(config, "temperature", 1.0),
        detach_projection=bool(_get(config, "detach_projection", False)),
    )
