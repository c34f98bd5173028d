from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core.losses import reference as ref
from hf_contrastive.core.losses import SupervisedSimCSELoss, UnsupervisedSimCSELoss, split_views


def _views(B=6, D=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(B, D, generator=g, dtype=torch.float64)
    z2 = z1 + 0.5 * torch.randn(B, D, generator=g, dtype=torch.float64)
    z3 = torch.randn(B, D, generator=g, dtype=torch.float64)
    return z1, z2, z3


def test_unsupervised_matches_paper_formula():
    z1, z2, _ = _views()
    out = UnsupervisedSimCSELoss()(z1, z2)
    assert out.loss.item() == pytest.approx(ref.infonce(z1, z2, tau=0.05), rel=1e-10)
    assert set(out.components) == {"simcse", "acc"}
    cfg = UnsupervisedSimCSELoss().config_dict()
    assert cfg["temperature"] == pytest.approx(0.05) and cfg["symmetric"] is False
    assert "gao2021simcse" in UnsupervisedSimCSELoss.citation


def test_one_2b_forward_split():
    z1, z2, _ = _views()
    stacked = torch.cat([z1, z2])
    interleaved = torch.stack([z1, z2], dim=1).reshape(-1, z1.shape[1])
    for emb, layout in ((stacked, "concat"), (interleaved, "interleaved")):
        v1, v2 = split_views(emb, layout)
        torch.testing.assert_close(v1, z1)
        torch.testing.assert_close(v2, z2)
    expected = UnsupervisedSimCSELoss()(z1, z2).loss
    assert UnsupervisedSimCSELoss().forward_stacked(stacked).loss.item() == pytest.approx(expected.item())
    with pytest.raises(ValueError, match="even number of rows"):
        split_views(torch.randn(5, 3))
    with pytest.raises(ValueError, match="layout"):
        split_views(stacked, "zigzag")


def test_supervised_matches_simcse_construction():
    """SimCSE builds [cos(z1, z2) | cos(z1, z3)] / tau, adds the weight on the z3 diagonal, CE to arange."""
    z1, z2, z3 = _views(seed=1)
    for weight in (0.0, 1.0, -2.0):
        out = SupervisedSimCSELoss(hard_negative_weight=weight)(z1, z2, z3)
        c12 = F.cosine_similarity(z1[:, None], z2[None], dim=-1) / 0.05
        c13 = F.cosine_similarity(z1[:, None], z3[None], dim=-1) / 0.05
        logits = torch.cat([c12, c13 + weight * torch.eye(6, dtype=torch.float64)], dim=1)
        expected = F.cross_entropy(logits, torch.arange(6))
        assert out.loss.item() == pytest.approx(expected.item(), rel=1e-10)
        assert out.loss.item() == pytest.approx(
            ref.infonce(z1, z2, z3[:, None], hard_negative_weight=weight), rel=1e-10
        )
    assert SupervisedSimCSELoss(hard_negative_weight=1.0).config_dict()["hard_negative_weight"] == 1.0


def test_unsupervised_batch_of_one_is_an_error():
    with pytest.raises(ValueError, match="no negatives"):
        UnsupervisedSimCSELoss()(torch.randn(1, 4), torch.randn(1, 4))
