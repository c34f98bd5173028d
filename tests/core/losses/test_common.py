"""Contract every loss keeps: LossOutput with detached components, citation, JSON config."""

from __future__ import annotations

import json

import pytest
import torch

import hf_contrastive
from hf_contrastive.core import losses

ALL = [
    losses.InfoNCELoss,
    losses.MultipleNegativesRankingLoss,
    losses.UnsupervisedSimCSELoss,
    losses.SupervisedSimCSELoss,
    losses.MultiCSRLoss,
    losses.CoSENTLoss,
    losses.EmbeddingRegressionLoss,
]


def test_all_exported():
    for name in losses.__all__:
        assert getattr(hf_contrastive, name) is getattr(losses, name)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_contract(cls):
    loss = cls()
    assert isinstance(loss, torch.nn.Module)
    assert loss.citation.lstrip().startswith("@") and loss.citation.count("{") == loss.citation.count("}")
    json.dumps(loss.config_dict())
    assert cls.__doc__ and "Inputs" in cls.__doc__ or cls is losses.MultipleNegativesRankingLoss
    a = torch.randn(4, 8, requires_grad=True)
    p = torch.randn(4, 8)
    if cls is losses.CoSENTLoss:
        out = loss(a, p, torch.tensor([0.0, 1.0, 2.0, 3.0]))
    elif cls is losses.EmbeddingRegressionLoss:
        out = loss(a, target_embeddings=p)
    elif cls is losses.MultiCSRLoss:
        out = loss(a, p, reference_anchor=a.detach(), reference_positive=p)
    else:
        out = loss(a, p)
    assert isinstance(out, losses.LossOutput)
    assert out.loss.dim() == 0 and out.loss.requires_grad
    assert out.components and all(not v.requires_grad and v.dim() == 0 for v in out.components.values())
    assert all(isinstance(v, float) for v in out.log_dict("train/").values())
    out.loss.backward()
    assert torch.isfinite(a.grad).all()
