from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core.losses import reference as ref
from hf_contrastive.core.losses import CoSENTLoss, EmbeddingRegressionLoss


def _pairs(B=8, D=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(B, D, generator=g, dtype=torch.float64)
    b = a + torch.randn(B, D, generator=g, dtype=torch.float64)
    return a, b


def test_cosent_matches_pairwise_loops():
    a, b = _pairs()
    scores = [0.5, 4.0, 2.0, 2.0, 5.0, 1.0, 3.5, 0.0]  # a tie included
    out = CoSENTLoss()(a, b, torch.tensor(scores))
    assert out.loss.item() == pytest.approx(ref.cosent(a, b, scores), rel=1e-10)
    assert CoSENTLoss(scale=7.0)(a, b, torch.tensor(scores)).loss.item() == pytest.approx(
        ref.cosent(a, b, scores, scale=7.0), rel=1e-10
    )
    assert CoSENTLoss().config_dict() == {
        "scale": 20.0,
        "similarity": "cosine",
        "gather_across_devices": "auto",
    }
    assert "CoSENT" in CoSENTLoss.citation


def test_cosent_all_equal_scores_gives_zero_loss():
    a, b = _pairs()
    assert CoSENTLoss()(a, b, torch.ones(8)).loss.item() == 0.0


def test_cosent_bad_input():
    a, b = _pairs()
    with pytest.raises(ValueError, match="one score per pair"):
        CoSENTLoss()(a, b, torch.ones(7))
    with pytest.raises(ValueError, match=r"\(8, 6\) and \(8, 5\)"):
        CoSENTLoss()(a, b[:, :5], torch.ones(8))
    with pytest.raises(ValueError, match="scores.*1 NaN"):
        CoSENTLoss()(a, b, torch.tensor([float("nan")] + [1.0] * 7))
    with pytest.raises(ValueError, match="> 0"):
        CoSENTLoss(scale=-1)


def test_regression_to_embeddings():
    a, t = _pairs(seed=1)
    mse = EmbeddingRegressionLoss()(a, target_embeddings=t)
    manual = sum(float((a[i, j] - t[i, j]) ** 2) for i in range(8) for j in range(6)) / 48
    assert mse.loss.item() == pytest.approx(manual, rel=1e-12)
    assert set(mse.components) == {"mse"}
    cos = EmbeddingRegressionLoss(objective="cosine")(a, target_embeddings=t)
    manual = sum(1 - ref.cos(a[i], t[i]) for i in range(8)) / 8
    assert cos.loss.item() == pytest.approx(manual, rel=1e-12)
    # the target is a teacher output: no gradient flows into it
    t.requires_grad_(True)
    EmbeddingRegressionLoss()(a.requires_grad_(True), target_embeddings=t).loss.backward()
    assert t.grad is None and a.grad is not None


def test_regression_to_scores():
    a, b = _pairs(seed=2)
    scores = torch.linspace(0, 1, 8, dtype=torch.float64)
    out = EmbeddingRegressionLoss()(a, b, scores=scores)
    manual = sum((ref.cos(a[i], b[i]) - float(scores[i])) ** 2 for i in range(8)) / 8
    assert out.loss.item() == pytest.approx(manual, rel=1e-10)
    dot = EmbeddingRegressionLoss(similarity="dot")(a, b, scores=scores)
    assert dot.loss.item() == pytest.approx(F.mse_loss((a * b).sum(-1), scores).item(), rel=1e-12)
    assert "reimers2020" in EmbeddingRegressionLoss.citation
    assert EmbeddingRegressionLoss().config_dict() == {"objective": "mse", "similarity": "cosine"}


def test_regression_bad_input():
    a, b = _pairs()
    loss = EmbeddingRegressionLoss()
    with pytest.raises(ValueError, match="exactly one"):
        loss(a)
    with pytest.raises(ValueError, match="exactly one"):
        loss(a, b, target_embeddings=b, scores=torch.ones(8))
    with pytest.raises(ValueError, match=r"\(8, 6\), got \(8, 4\)"):
        loss(a, target_embeddings=b[:, :4])
    with pytest.raises(ValueError, match="needs positive"):
        loss(a, scores=torch.ones(8))
    with pytest.raises(ValueError, match="anchor.*NaN"):
        loss(a.masked_fill(a > 1, float("nan")), target_embeddings=b)
    with pytest.raises(ValueError, match="objective"):
        EmbeddingRegressionLoss(objective="l1")
