"""Slow, loop-based reference formulas the losses are checked against (float64, plain Python)."""

from __future__ import annotations

import math

import torch


def cos(u: torch.Tensor, v: torch.Tensor) -> float:
    u, v = u.double(), v.double()
    return float((u @ v) / (u.norm() * v.norm()))


def dot(u: torch.Tensor, v: torch.Tensor) -> float:
    return float(u.double() @ v.double())


def infonce(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor | None = None,
    *,
    tau: float = 0.05,
    sim=cos,
    hard_negative_weight: float = 0.0,
    symmetric: bool = False,
    ref: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None,
    phi: float = 0.95,
) -> float:
    """InfoNCE written out term by term.

    anchor [B, D]; positive [B, D] or [B, P, D]; negatives [B, N, D] or None;
    ref = (reference anchor, reference positive, reference negatives) for false-negative masking.
    """
    B = anchor.shape[0]
    pos = positive if positive.dim() == 3 else positive[:, None]
    P = pos.shape[1]
    N = 0 if negatives is None else negatives.shape[1]
    if ref is not None:
        ra, rp, rn = ref
        rp = rp if rp.dim() == 3 else rp[:, None]

    def masked(i: int, ref_vec: torch.Tensor | None) -> bool:
        return ref is not None and cos(ra[i], ref_vec) > phi

    total = 0.0
    count = 0
    for i in range(B):
        # candidates that are negatives for anchor i: (logit)
        neg_logits = []
        for j in range(B):
            for p in range(P):
                if j == i:
                    continue
                if masked(i, rp[j, p] if ref is not None else None):
                    continue
                neg_logits.append(sim(anchor[i], pos[j, p]) / tau)
            for n in range(N):
                if masked(i, rn[j, n] if ref is not None else None):
                    continue
                bonus = hard_negative_weight if j == i else 0.0
                neg_logits.append(sim(anchor[i], negatives[j, n]) / tau + bonus)
        for p in range(P):
            s_pos = sim(anchor[i], pos[i, p]) / tau
            denom = math.exp(s_pos) + sum(math.exp(x) for x in neg_logits)
            total += -(s_pos - math.log(denom))
            count += 1
    a2p = total / count
    if not symmetric:
        return a2p
    total, count = 0.0, 0
    for i in range(B):
        for p in range(P):
            s_pos = sim(pos[i, p], anchor[i]) / tau
            denom = math.exp(s_pos)
            for j in range(B):
                if j == i:
                    continue
                if ref is not None and cos(rp[i, p], ra[j]) > phi:
                    continue
                denom += math.exp(sim(pos[i, p], anchor[j]) / tau)
            total += -(s_pos - math.log(denom))
            count += 1
    return (a2p + total / count) / 2


def cosent(anchor: torch.Tensor, positive: torch.Tensor, scores: list[float], scale: float = 20.0) -> float:
    c = [cos(anchor[i], positive[i]) for i in range(anchor.shape[0])]
    acc = 1.0
    for i in range(len(c)):
        for j in range(len(c)):
            if scores[i] > scores[j]:
                acc += math.exp(scale * (c[j] - c[i]))
    return math.log(acc)
