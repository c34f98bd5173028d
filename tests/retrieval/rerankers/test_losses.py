"""Reranker loss classes against their formulas, by hand in float64."""

from __future__ import annotations

import math

import pytest
import torch

import hf_contrastive.retrieval.rerankers as rerankers
from hf_contrastive.core.losses import LossOutput
from hf_contrastive.retrieval.rerankers.losses import (
    ListwiseInfoNCELoss,
    PointwiseBCELoss,
    YesNoSFTLoss,
    listwise_infonce_loss,
    pointwise_bce_loss,
    yes_no_sft_loss,
)
from hf_contrastive.retrieval.rerankers.trainer import RerankerConfig, build_reranker_loss

EPS64 = torch.finfo(torch.float64).eps


def tol(n_terms: int, magnitude: float) -> float:
    """Rounding bound of a float64 sum of ``n_terms`` terms of size ``magnitude`` (with exp/log: x16)."""
    return 16 * n_terms * EPS64 * max(1.0, magnitude)


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def test_pointwise_bce_equals_the_formula():
    logits = torch.tensor([2.0, -1.0, 0.5, 3.5, -4.0], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([1, 0, 0, 1, 0])
    for w in (None, 4.0):
        out = PointwiseBCELoss(pos_weight=w)(logits, labels)
        ww = 1.0 if w is None else w
        terms = [
            -(ww * log_sigmoid(s) if y else log_sigmoid(-s)) for s, y in zip(logits.tolist(), labels.tolist())
        ]
        want = sum(terms) / len(terms)
        assert out.loss.dtype == torch.float64
        assert float(out.loss.detach()) == pytest.approx(want, abs=tol(5, want))
        assert set(out.components) == {"bce"} and float(out.components["bce"]) == float(out.loss.detach())
    # the keyword overrides the constructor's weight (the trainer passes it per batch)
    logits = logits.detach()
    overridden = PointwiseBCELoss(pos_weight=4.0)(logits, labels, pos_weight=2.0).loss
    assert float(overridden) == float(PointwiseBCELoss(pos_weight=2.0)(logits, labels).loss)
    assert float(overridden) != float(PointwiseBCELoss(pos_weight=4.0)(logits, labels).loss)
    with pytest.raises(ValueError, match="pos_weight must be a finite number > 0"):
        PointwiseBCELoss(pos_weight=0.0)
    with pytest.raises(ValueError, match="differ in shape"):
        PointwiseBCELoss()(logits, labels[:3])


def test_listwise_infonce_equals_the_formula():
    scores = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, 1.0], [3.0, 2.9, -2.0]], dtype=torch.float64)
    tau = 0.5
    loss = ListwiseInfoNCELoss(temperature=tau)
    out = loss(scores)
    want = 0.0
    for row in scores.tolist():
        want += math.log(sum(math.exp(s / tau) for s in row)) - row[0] / tau
    want /= len(scores)
    assert float(out.loss.detach()) == pytest.approx(want, abs=tol(9, want))
    assert float(out.components["infonce"]) == float(out.loss.detach())
    assert float(out.components["acc"]) == pytest.approx(
        2 / 3, abs=EPS64
    )  # rows 0 and 2 rank the positive first
    assert loss.config_dict() == {"temperature": 0.5}
    with pytest.raises(ValueError, match="at least one negative"):
        loss(torch.zeros(3, 1))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        ListwiseInfoNCELoss(temperature=0.0)


def test_yes_no_sft_equals_the_formula():
    logits = torch.tensor([[0.3, 1.2], [2.0, -0.5], [-1.0, -3.0]], dtype=torch.float64)
    labels = torch.tensor([1, 0, 1])
    out = YesNoSFTLoss()(logits, labels)
    want = 0.0
    for (no, yes), y in zip(logits.tolist(), labels.tolist()):
        want -= (yes if y else no) - math.log(math.exp(no) + math.exp(yes))
    want /= 3
    assert float(out.loss.detach()) == pytest.approx(want, abs=tol(6, want))
    assert set(out.components) == {"sft"}
    with pytest.raises(ValueError, match=r"shape \[N, 2\]"):
        YesNoSFTLoss()(logits[:, :1], labels)


def test_functions_are_the_classes_scalars_and_keep_float32():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, generator=g)
    labels = torch.tensor([1.0, 0, 0, 1, 0, 0])
    fn = pointwise_bce_loss(logits, labels, pos_weight=2.0)
    assert fn.dtype == torch.float32 and torch.equal(fn, PointwiseBCELoss(2.0)(logits, labels).loss)
    groups = torch.randn(2, 4, generator=g).to(torch.bfloat16)
    fn = listwise_infonce_loss(groups, temperature=0.7)
    assert fn.dtype == torch.float32 and torch.equal(fn, ListwiseInfoNCELoss(0.7)(groups).loss)
    yn = torch.randn(3, 2, generator=g)
    assert torch.equal(
        yes_no_sft_loss(yn, torch.tensor([1, 0, 1])), YesNoSFTLoss()(yn, torch.tensor([1, 0, 1])).loss
    )
    assert isinstance(YesNoSFTLoss()(yn, torch.tensor([1, 0, 1])), LossOutput)
    for name in ("PointwiseBCELoss", "ListwiseInfoNCELoss", "YesNoSFTLoss", "pointwise_bce_loss"):
        assert name in rerankers.__all__ and hasattr(rerankers, name)


@pytest.mark.parametrize(
    "objective, llm, cls",
    [
        ("pointwise", False, PointwiseBCELoss),
        ("sft", True, YesNoSFTLoss),
        ("listwise", False, ListwiseInfoNCELoss),
        ("cl", True, ListwiseInfoNCELoss),
    ],
)
def test_trainer_objective_maps_to_a_loss_class(tmp_path, objective, llm, cls):
    args = RerankerConfig(output_dir=str(tmp_path), objective=objective, temperature=0.25, report_to="none")
    loss = build_reranker_loss(args, llm=llm)
    assert type(loss) is cls
    if cls is ListwiseInfoNCELoss:
        assert loss.temperature == 0.25
