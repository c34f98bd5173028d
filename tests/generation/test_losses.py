"""SimCTGLoss (generation/losses.py) against the SimCTG formula, pair by pair in float64."""

from __future__ import annotations

import math

import pytest
import torch

import hf_contrastive.generation.simctg as simctg
from hf_contrastive.generation.losses import SimCTGLoss, simctg_contrastive_loss

EPS64 = torch.finfo(torch.float64).eps


def hand_cl(h: torch.Tensor, mask: list[list[int]], rho: float) -> float:
    """Mean over the valid pairs (i != j) of every sequence of max(0, rho - s(h_i, h_i) + s(h_i, h_j))."""

    def cos(u: list[float], v: list[float]) -> float:
        return sum(a * b for a, b in zip(u, v)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))

    total, count = 0.0, 0
    for b, seq in enumerate(h.tolist()):
        keep = [t for t in range(len(seq)) if mask[b][t]]
        for i in keep:
            for j in keep:
                if i != j:
                    total += max(0.0, rho - cos(seq[i], seq[i]) + cos(seq[i], seq[j]))
                    count += 1
    return total / count


@pytest.mark.parametrize("rho", [0.5, 1.5])
def test_contrastive_term_equals_the_formula(rho):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    mask = [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]]
    out = SimCTGLoss(margin=rho)(h, torch.tensor(mask))
    want = hand_cl(h.detach(), mask, rho)
    # 28 pairs, each a sum of 6 products of O(1) values
    assert out.loss.dtype == torch.float64
    assert float(out.loss.detach()) == pytest.approx(want, abs=16 * 28 * 6 * EPS64 * max(1.0, rho))
    assert set(out.components) == {"contrastive"}
    out.loss.backward()
    assert h.grad[1, 3:].abs().max() == 0  # padded positions take part in no pair
    assert float(out.loss.detach()) > 0


def test_total_with_the_lm_loss_and_the_weight():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(2, 4, 3, generator=g, dtype=torch.float64)
    mle = torch.tensor(2.25, dtype=torch.float64)
    cl = hand_cl(h, [[1] * 4, [1] * 4], 0.5)
    out = SimCTGLoss(margin=0.5, contrastive_weight=0.3)(h, lm_loss=mle)
    assert float(out.loss.detach()) == pytest.approx(2.25 + 0.3 * cl, abs=16 * 24 * 3 * EPS64)
    assert float(out.components["mle"]) == 2.25
    assert float(out.components["contrastive"]) == pytest.approx(cl, abs=16 * 24 * 3 * EPS64)
    alone = SimCTGLoss(contrastive_weight=0.3)(h)
    assert (
        float(alone.loss.detach()) == pytest.approx(0.3 * cl, abs=16 * 24 * 3 * EPS64)
        and "mle" not in alone.components
    )


def test_identical_states_give_the_margin_and_spread_states_give_zero():
    same = torch.ones(1, 4, 3, dtype=torch.float64)
    assert float(SimCTGLoss()(same).loss) == pytest.approx(0.5, abs=8 * EPS64)
    spread = torch.eye(3, dtype=torch.float64)[None]  # cosine 0 between distinct tokens: hinge at 0.5 - 1 < 0
    assert float(SimCTGLoss()(spread).loss) == 0.0


def test_wrapper_is_the_class_and_stays_public():
    g = torch.Generator().manual_seed(2)
    h = torch.randn(2, 5, 4, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    fn = simctg_contrastive_loss(h, mask, margin=0.4)
    assert fn.dtype == torch.float32
    assert torch.equal(fn, SimCTGLoss(margin=0.4)(h, mask).loss)
    assert simctg.simctg_contrastive_loss is simctg_contrastive_loss
    assert "simctg_contrastive_loss" in simctg.__all__ and "SimCTGLoss" in simctg.__all__


def test_validation_and_config():
    with pytest.raises(ValueError, match="must be >= 0"):
        SimCTGLoss(margin=-0.1)
    with pytest.raises(ValueError, match="`contrastive_weight` must be >= 0"):
        SimCTGLoss(contrastive_weight=-1.0)
    with pytest.raises(ValueError, match=r"\[batch, seq, dim\]"):
        SimCTGLoss()(torch.ones(3, 4))
    assert SimCTGLoss(0.25, 2.0).config_dict() == {"margin": 0.25, "contrastive_weight": 2.0}
    assert "Su, Yixuan" in SimCTGLoss.citation
