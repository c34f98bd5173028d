"""Reranker objectives on grouped scores.

A training group is one query with one relevant document followed by ``n`` irrelevant ones, so
scores come as ``[G, 1 + n]`` with the relevant document in column 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_groups(scores: torch.Tensor) -> None:
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(
            f"Expected grouped scores [groups, 1 + negatives] with at least one negative, got {tuple(scores.shape)}."
        )


def pointwise_bce_loss(
    logits: torch.Tensor, labels: torch.Tensor, pos_weight: float | None = None
) -> torch.Tensor:
    """Binary cross-entropy of relevance logits ``[N]`` against 0/1 labels ``[N]`` (monoBERT).

    ``pos_weight`` rescales the positive term (e.g. the number of negatives per positive, to
    balance a 1:n group).
    """
    if logits.shape != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} differ in shape.")
    weight = (
        None if pos_weight is None else torch.tensor(pos_weight, device=logits.device, dtype=torch.float32)
    )
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float(), pos_weight=weight)


def listwise_infonce_loss(scores: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """InfoNCE over each group: ``-log softmax(scores / temperature)[:, 0]``, averaged over groups.

    Used by the cross-encoder's listwise objective and, on the "yes" logits, by the LLM
    reranker's contrastive (CL) objective.
    """
    _check_groups(scores)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    target = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
    return F.cross_entropy(scores.float() / temperature, target)


def yes_no_sft_loss(yes_no_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Pointwise SFT loss of the LLM reranker: cross-entropy of ``softmax([no, yes])`` against the
    label (1 = the answer is "yes"). ``yes_no_logits`` is ``[N, 2]`` in (no, yes) order."""
    if yes_no_logits.ndim != 2 or yes_no_logits.shape[1] != 2:
        raise ValueError(f"Expected (no, yes) logits of shape [N, 2], got {tuple(yes_no_logits.shape)}.")
    return F.cross_entropy(yes_no_logits.float(), labels.long())


__all__ = ["listwise_infonce_loss", "pointwise_bce_loss", "yes_no_sft_loss"]
