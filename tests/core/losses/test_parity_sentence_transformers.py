"""Same embeddings through sentence-transformers' losses and ours must give the same value.

sentence-transformers' losses expose ``compute_loss_from_embeddings(embeddings, labels)``, the
part of ``forward`` after the encoder, so no model is needed: fixed embeddings go straight in.
"""

from __future__ import annotations

import pytest
import torch
from tiny_models import summation_tolerance

from hf_contrastive.core.losses import CoSENTLoss, InfoNCELoss, MultipleNegativesRankingLoss

st_losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")


def _embeddings(B=16, D=32, N=0, seed=0):
    """float64 embeddings: the two libraries sum in other orders, which float64 keeps far below any real gap."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(B, D, generator=g, dtype=torch.float64)
    p = a + 0.8 * torch.randn(B, D, generator=g, dtype=torch.float64)
    negs = [a + 1.2 * torch.randn(B, D, generator=g, dtype=torch.float64) for _ in range(N)]
    return a, p, negs


def _assert_close(ours, theirs, depth):
    """Equal up to the rounding of sums of ``depth`` terms (scale: the value itself, at least 1)."""
    assert ours.dtype == theirs.dtype == torch.float64
    scale = max(1.0, float(theirs.abs().max()))
    allowed = summation_tolerance(torch.float64, scale, depth)
    gap = float((ours - theirs).abs().max())
    assert gap <= allowed, f"gap {gap:.3g} > allowed {allowed:.3g}"


@pytest.mark.parametrize("N", [0, 1, 3])
def test_mnrl_matches_sentence_transformers(N):
    a, p, negs = _embeddings(N=N, seed=N)
    theirs = st_losses.MultipleNegativesRankingLoss(model=None, scale=20.0)
    expected = theirs.compute_loss_from_embeddings([a, p, *negs], labels=None)
    ours = MultipleNegativesRankingLoss()(a, p, torch.stack(negs, dim=1) if negs else None).loss
    depth = a.shape[0] * (1 + N) * a.shape[1]  # logits over all candidates, each a D-term dot product
    _assert_close(ours, expected, depth)
    _assert_close(
        InfoNCELoss(temperature=0.05)(a, p, torch.stack(negs, dim=1) if negs else None).loss, expected, depth
    )


def test_mnrl_gradients_match_sentence_transformers():
    a, p, negs = _embeddings(N=2, seed=5)
    a1, p1, n1 = (t.clone().requires_grad_(True) for t in (a, p, torch.stack(negs, 1)))
    a2, p2, n2 = (t.clone().requires_grad_(True) for t in (a, p, torch.stack(negs, 1)))
    st_losses.MultipleNegativesRankingLoss(model=None).compute_loss_from_embeddings(
        [a1, p1, n1[:, 0], n1[:, 1]], labels=None
    ).backward()
    InfoNCELoss()(a2, p2, n2).loss.backward()
    for x, y in ((a1, a2), (p1, p2), (n1, n2)):
        _assert_close(y.grad, x.grad, depth=a.shape[0] * 3 * a.shape[1])


def test_symmetric_matches_sentence_transformers_bidirectional():
    a, p, negs = _embeddings(N=1, seed=9)
    theirs = st_losses.MultipleNegativesRankingLoss(
        model=None, directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction"
    )
    expected = theirs.compute_loss_from_embeddings([a, p, *negs], labels=None)
    ours = InfoNCELoss(symmetric=True)(a, p, torch.stack(negs, 1)).loss
    _assert_close(ours, expected, depth=2 * a.shape[0] * 2 * a.shape[1])


@pytest.mark.parametrize("labels", ["float", "int", "bool"])
def test_cosent_matches_sentence_transformers(labels):
    a, p, _ = _embeddings(B=24, seed=3)
    g = torch.Generator().manual_seed(4)
    scores = {
        "float": torch.rand(24, generator=g) * 5,
        "int": torch.randint(0, 6, (24,), generator=g),  # many ties
        "bool": torch.rand(24, generator=g) > 0.5,
    }[labels]
    theirs = st_losses.CoSENTLoss(model=None, scale=20.0)
    expected = theirs.compute_loss_from_embeddings([a, p], scores.clone())
    ours = CoSENTLoss()(a, p, scores).loss
    _assert_close(ours, expected, depth=a.shape[0] ** 2 * a.shape[1])  # all pairs of pairs
