"""TKRE's span-level contrastive loss (moved to relation/losses.py) against its formula, in float64."""

from __future__ import annotations

import math

import pytest
import torch

import hf_contrastive.relation as relation
import hf_contrastive.relation.tkre as tkre
from hf_contrastive.relation.losses import SpanContrastiveLoss

EPS64 = torch.finfo(torch.float64).eps


def unit(v: list[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def dot(u: list[float], v: list[float]) -> float:
    return sum(a * b for a, b in zip(u, v))


def hand(anchors, positives, negatives, labels, valid, tau, anchor_negatives):
    a = [unit(r) for r in anchors.tolist()]
    p = [unit(r) for r in positives.tolist()]
    n = [unit(r) for r in negatives.tolist()]
    losses, wins = [], []
    for i, y in enumerate(labels.tolist()):
        if not valid[i]:
            continue
        pos, neg = dot(a[y], p[i]) / tau, dot(a[y], n[i]) / tau
        denom = math.exp(pos) + math.exp(neg)
        if anchor_negatives:
            denom += sum(math.exp(dot(a[r], p[i]) / tau) for r in range(len(a)) if r != y)
        losses.append(math.log(denom) - pos)
        wins.append(pos > neg)
    return sum(losses) / len(losses), sum(wins) / len(wins)


@pytest.mark.parametrize("anchor_negatives", [False, True])
def test_span_contrastive_loss_equals_the_formula(anchor_negatives):
    g = torch.Generator().manual_seed(0)
    anchors = torch.randn(3, 5, generator=g, dtype=torch.float64)
    positives = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    negatives = torch.randn(6, 5, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 2, 1, 1, 0, 2])
    valid = torch.tensor([True, True, False, True, True, True])
    tau = 0.1
    loss = SpanContrastiveLoss(temperature=tau, anchor_negatives=anchor_negatives)
    out = loss(anchors, positives, negatives, labels, valid)
    want, acc = hand(anchors, positives, negatives, labels, valid.tolist(), tau, anchor_negatives)
    # logits up to 1 / tau = 10 in magnitude; exp/log over at most 4 terms per row, 5 rows
    assert out.loss.dtype == torch.float64
    assert float(out.loss.detach()) == pytest.approx(want, abs=64 * 5 * 4 * EPS64 * 10)
    assert float(out.components["scl"]) == float(out.loss.detach())
    assert float(out.components["scl_pos_gt_neg"]) == pytest.approx(acc, abs=EPS64)
    out.loss.backward()
    assert positives.grad[2].abs().max() == 0  # the invalid row contributes nothing
    assert positives.grad[0].abs().max() > 0


def test_anchor_negatives_only_add_to_the_denominator():
    g = torch.Generator().manual_seed(1)
    anchors, positives, negatives = (torch.randn(4, 3, generator=g, dtype=torch.float64) for _ in range(3))
    labels = torch.tensor([0, 1, 2, 3])
    plain = SpanContrastiveLoss()(anchors, positives, negatives, labels).loss
    more = SpanContrastiveLoss(anchor_negatives=True)(anchors, positives, negatives, labels).loss
    assert float(more.detach()) > float(plain.detach())


def test_no_valid_row_gives_a_zero_that_keeps_the_graph():
    positives = torch.randn(2, 3, requires_grad=True)
    out = SpanContrastiveLoss()(
        torch.randn(2, 3), positives, torch.randn(2, 3), torch.tensor([0, 1]), torch.tensor([False, False])
    )
    assert float(out.loss.detach()) == 0.0 and out.loss.requires_grad and set(out.components) == {"scl"}


def test_validation_and_config():
    loss = SpanContrastiveLoss(temperature=0.2, anchor_negatives=True)
    assert loss.config_dict() == {"temperature": 0.2, "anchor_negatives": True}
    assert "Guo, Quanjiang" in loss.citation
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        SpanContrastiveLoss(temperature=float("nan"))
    with pytest.raises(ValueError, match=r"labels must be relation indices in \[0, 2\)"):
        loss(torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 3), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="positives and negatives must both be"):
        loss(torch.randn(2, 3), torch.randn(2, 3), torch.randn(3, 3), torch.tensor([0, 1]))


def test_importable_from_its_old_places():
    assert tkre.SpanContrastiveLoss is SpanContrastiveLoss
    assert relation.SpanContrastiveLoss is SpanContrastiveLoss
    assert "SpanContrastiveLoss" in tkre.__all__ and "SpanContrastiveLoss" in relation.__all__
