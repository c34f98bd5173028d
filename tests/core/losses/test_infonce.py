from __future__ import annotations

import math

import pytest
import torch

import hf_contrastive
from core.losses import reference as ref
from hf_contrastive.core import distributed
from hf_contrastive.core.losses import InfoNCELoss, LossOutput, MultiCSRLoss, MultipleNegativesRankingLoss


def _data(B=5, D=7, N=0, P=1, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(B, D, generator=g, dtype=dtype)
    p = (
        torch.randn(B, D, generator=g, dtype=dtype)
        if P == 1
        else torch.randn(B, P, D, generator=g, dtype=dtype)
    )
    n = torch.randn(B, N, D, generator=g, dtype=dtype) if N else None
    # pull positives towards anchors so the loss is not trivial
    p = p + (a if P == 1 else a[:, None])
    return a, p, n


def test_exported_from_top_level():
    for name in ["InfoNCELoss", "MultipleNegativesRankingLoss", "MultiCSRLoss", "LossOutput"]:
        assert hasattr(hf_contrastive, name)


@pytest.mark.parametrize("N", [0, 1, 3])
def test_matches_loop_reference(N):
    a, p, n = _data(N=N)
    out = InfoNCELoss()(a, p, n)
    assert isinstance(out, LossOutput)
    assert out.loss.item() == pytest.approx(ref.infonce(a, p, n), rel=1e-10)
    assert out.components["infonce"].item() == pytest.approx(out.loss.item())
    assert not out.components["infonce"].requires_grad
    assert 0.0 <= out.components["acc"].item() <= 1.0


def test_hard_negative_weight_symmetric_dot_and_temperature():
    a, p, n = _data(N=2, seed=1)
    loss = InfoNCELoss(temperature=0.1, hard_negative_weight=0.7, symmetric=True)
    expected = ref.infonce(a, p, n, tau=0.1, hard_negative_weight=0.7, symmetric=True)
    out = loss(a, p, n)
    assert out.loss.item() == pytest.approx(expected, rel=1e-10)
    assert set(out.components) == {"infonce", "infonce_sym", "acc"}
    a2p = ref.infonce(a, p, n, tau=0.1, hard_negative_weight=0.7)
    assert out.components["infonce"].item() == pytest.approx(a2p, rel=1e-10)

    dot_loss = InfoNCELoss(scale=0.5, similarity="dot")(a, p, n)
    assert dot_loss.loss.item() == pytest.approx(ref.infonce(a, p, n, tau=2.0, sim=ref.dot), rel=1e-10)


def test_multiple_positives():
    a, p, n = _data(B=4, P=3, N=2, seed=2)
    assert p.shape == (4, 3, 7)
    out = InfoNCELoss(symmetric=True, hard_negative_weight=0.4)(a, p, n)
    expected = ref.infonce(a, p, n, symmetric=True, hard_negative_weight=0.4)
    assert out.loss.item() == pytest.approx(expected, rel=1e-10)


def test_2d_negatives_mean_one_per_anchor():
    a, p, n = _data(N=1, seed=3)
    two_d = InfoNCELoss()(a, p, n[:, 0])
    three_d = InfoNCELoss()(a, p, n)
    assert two_d.loss.item() == pytest.approx(three_d.loss.item(), rel=1e-12)


def test_temperature_scale_equivalence_and_config():
    a, p, n = _data(N=1)
    assert InfoNCELoss(temperature=0.05)(a, p, n).loss.item() == pytest.approx(
        InfoNCELoss(scale=20.0)(a, p, n).loss.item()
    )
    cfg = InfoNCELoss().config_dict()
    assert cfg["temperature"] == pytest.approx(0.05) and cfg["scale"] == pytest.approx(20.0)
    assert cfg["gather_across_devices"] == "auto"
    assert InfoNCELoss.citation.startswith("@") and "oord2018" in InfoNCELoss.citation
    assert MultipleNegativesRankingLoss().config_dict() == cfg


def test_learnable_scale_gets_gradient_and_is_clamped():
    a, p, n = _data(N=1)
    loss = InfoNCELoss(temperature=0.05, learnable_scale=True)
    assert [name for name, _ in loss.named_parameters()] == ["log_scale"]
    out = loss(a.float(), p.float(), n.float())
    out.loss.backward()
    assert loss.log_scale.grad is not None and loss.log_scale.grad.abs() > 0
    assert out.components["scale"].item() == pytest.approx(20.0, rel=1e-5)
    with torch.no_grad():
        loss.log_scale.fill_(math.log(1e4))
    assert loss.current_scale().item() == pytest.approx(100.0)
    assert loss.temperature == pytest.approx(0.01)
    with pytest.raises(ValueError, match="outside"):
        InfoNCELoss(temperature=0.001, learnable_scale=True)
    # the fixed scale is a buffer: saved with the state dict, not trained
    assert "log_scale" in InfoNCELoss().state_dict() and not list(InfoNCELoss().parameters())


def test_half_precision_computed_in_fp32():
    a, p, n = _data(N=2)
    full = InfoNCELoss()(a.float(), p.float(), n.float()).loss
    half = InfoNCELoss()(a.bfloat16(), p.bfloat16(), n.bfloat16()).loss
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(full.item(), rel=2e-2)


def test_gradients_match_autograd_of_reference_formula():
    # an independent tensor formula (explicit softmax over a hand-built logit matrix)
    a, p, n = _data(B=4, N=2, seed=5)
    a.requires_grad_(True)
    InfoNCELoss(hard_negative_weight=0.3)(a, p, n).loss.backward()
    got = a.grad.clone()
    a.grad = None
    an = a / a.norm(dim=1, keepdim=True)
    pn = p / p.norm(dim=1, keepdim=True)
    nn_ = n / n.norm(dim=2, keepdim=True)
    rows = []
    for i in range(4):
        cands = [pn[j] for j in range(4)] + [nn_[j, k] for j in range(4) for k in range(2)]
        logits = torch.stack([an[i] @ c for c in cands]) / 0.05
        bonus = torch.zeros_like(logits)
        bonus[4 + 2 * i : 4 + 2 * i + 2] = 0.3
        rows.append(-(logits + bonus).log_softmax(0)[i])
    torch.stack(rows).mean().backward()
    torch.testing.assert_close(got, a.grad, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------- false-negative masking ---
def _masking_data():
    a, p, n = _data(B=5, N=1, seed=7)
    g = torch.Generator().manual_seed(11)
    ra = torch.randn(5, 4, generator=g, dtype=torch.float64)
    rp = torch.randn(5, 4, generator=g, dtype=torch.float64)
    rn = torch.randn(5, 1, 4, generator=g, dtype=torch.float64)
    rp[3] = ra[0] * 2 + 0.01  # positive of row 3 is a false negative for anchor 0
    rn[2, 0] = ra[4] + 0.02  # hard negative of row 2 is a false negative for anchor 4
    rn[4, 0] = ra[4] * 3  # anchor 4's own hard negative: masked too (reference cos > phi)
    rp[1] = ra[1]  # anchor 1's own positive: identical in the reference, never masked
    # make the planted false negatives strong competitors in the trained embeddings too
    p[3] = a[0] * 1.5
    n[2, 0] = a[4] - 0.1
    return a, p, n, ra, rp, rn


def test_false_negative_masking_matches_reference():
    a, p, n, ra, rp, rn = _masking_data()
    loss = MultiCSRLoss()
    assert loss.phi == 0.95 and loss.config_dict()["false_negative_threshold"] == 0.95
    assert "wang2023multicsr" in loss.citation
    out = loss(a, p, n, reference_anchor=ra, reference_positive=rp, reference_negatives=rn)
    expected = ref.infonce(a, p, n, ref=(ra, rp, rn), phi=0.95)
    assert out.loss.item() == pytest.approx(expected, rel=1e-10)
    n_masked = sum(
        (j != i and ref.cos(ra[i], rp[j]) > 0.95) + (ref.cos(ra[i], rn[j, 0]) > 0.95)
        for i in range(5)
        for j in range(5)
    )
    assert n_masked >= 3  # the three planted ones at least
    assert out.components["masked"].item() == pytest.approx(n_masked / 5)
    unmasked = InfoNCELoss()(a, p, n).loss.item()
    assert abs(unmasked - expected) > 1e-3  # masking changed something

    sym = MultiCSRLoss(symmetric=True)(
        a, p, n, reference_anchor=ra, reference_positive=rp, reference_negatives=rn
    )
    assert sym.loss.item() == pytest.approx(ref.infonce(a, p, n, ref=(ra, rp, rn), symmetric=True), rel=1e-10)


def test_masking_every_negative_leaves_finite_loss_and_grad():
    a, p, _ = _data(B=3)
    a.requires_grad_(True)
    same = torch.ones(3, 4, dtype=torch.float64)  # every reference embedding identical
    out = MultiCSRLoss()(a, p, reference_anchor=same, reference_positive=same)
    assert out.loss.item() == pytest.approx(0.0, abs=1e-12)
    out.loss.backward()
    assert torch.isfinite(a.grad).all()


# --------------------------------------------------------------------------- bad input ---
@pytest.mark.parametrize(
    "kwargs", [{"temperature": 0}, {"temperature": -0.1}, {"scale": 0.0}, {"temperature": float("nan")}]
)
def test_bad_temperature(kwargs):
    with pytest.raises(ValueError, match="> 0"):
        InfoNCELoss(**kwargs)


def test_inconsistent_temperature_and_scale():
    with pytest.raises(ValueError, match="not both"):
        InfoNCELoss(temperature=0.05, scale=10)
    InfoNCELoss(temperature=0.05, scale=20)  # consistent is fine


def test_shape_errors_name_the_shapes():
    a = torch.randn(4, 8)
    with pytest.raises(ValueError, match=r"\(3, 8\)"):
        InfoNCELoss()(a, torch.randn(3, 8))
    with pytest.raises(ValueError, match=r"\(4, 2, 6\)"):
        InfoNCELoss()(a, torch.randn(4, 8), torch.randn(4, 2, 6))
    with pytest.raises(ValueError, match=r"\[B, D\].*\(4,\)"):
        InfoNCELoss()(torch.randn(4), torch.randn(4, 8))
    with pytest.raises(TypeError, match="floating"):
        InfoNCELoss()(a, torch.ones(4, 8, dtype=torch.long))


def test_single_anchor_without_hard_negatives_has_no_negatives():
    with pytest.raises(ValueError, match="no negatives"):
        InfoNCELoss()(torch.randn(1, 8), torch.randn(1, 8))
    # one hard negative is enough
    out = InfoNCELoss()(torch.randn(1, 8), torch.randn(1, 8), torch.randn(1, 1, 8))
    assert torch.isfinite(out.loss)


def test_nan_input_is_reported():
    a, p, n = _data(N=1)
    p[2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"positive \(shape \(5, 7\): 1 NaN"):
        InfoNCELoss()(a, p, n)
    n[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="negatives.*1 inf"):
        InfoNCELoss()(a, p.nan_to_num(), n)


def test_reference_arguments_checked():
    a, p, n = _data(N=1)
    with pytest.raises(ValueError, match="needs reference_anchor"):
        MultiCSRLoss()(a, p, n)
    with pytest.raises(ValueError, match="reference_negatives"):
        MultiCSRLoss()(a, p, n, reference_anchor=torch.randn(5, 3), reference_positive=torch.randn(5, 3))
    with pytest.raises(ValueError, match="false_negative_threshold is None"):
        InfoNCELoss()(a, p, n, reference_anchor=a, reference_positive=p)
    with pytest.raises(ValueError, match=r"\(4, 3\)"):
        MultiCSRLoss()(a, p, reference_anchor=torch.randn(4, 3), reference_positive=torch.randn(5, 3))


# ----------------------------------------------- label offsets under simulated gathering ---
class _FakeWorld:
    """Pretend to be one rank of two: the other rank's packed rows are replayed from a recording."""

    def __init__(self, monkeypatch, me: int, other_rows: torch.Tensor | None, sizes: list[int]):
        self.recorded: torch.Tensor | None = None
        self.other = other_rows
        self.me, self.sizes = me, sizes
        monkeypatch.setattr(distributed, "is_distributed", lambda: True)
        monkeypatch.setattr(distributed, "rank", lambda: me)
        monkeypatch.setattr(distributed, "world_size", lambda: 2)
        monkeypatch.setattr(distributed, "collective_device", lambda t: t.device)
        monkeypatch.setattr(distributed, "all_gather_sizes", self.sizes_fn)
        monkeypatch.setattr(distributed, "gather_with_grad", self.gather)

    def sizes_fn(self, values, device="cpu"):
        values = list(values)
        return [[self.sizes[r], *values[1:]] for r in range(2)]

    def gather(self, t, sizes=None):
        self.recorded = t.detach().clone()
        other = self.other if self.other is not None else t.new_zeros((self.sizes[1 - self.me], t.shape[1]))
        return torch.cat([t, other]) if self.me == 0 else torch.cat([other, t])


@pytest.mark.parametrize(
    ("sizes", "kwargs"),
    [
        ([3, 3], {"hard_negative_weight": 0.5}),
        ([2, 4], {"symmetric": True}),
        ([4, 2], {"hard_negative_weight": 1.0, "symmetric": True, "false_negative_threshold": 0.95}),
    ],
)
def test_label_offsets_with_hard_negatives_when_gathering(monkeypatch, sizes, kwargs):
    """Rank 1's rows must be labelled after rank 0's rows, whatever the number of hard negatives."""
    G = sum(sizes)
    a, p, n = _data(B=G, N=2, seed=13)
    masking = "false_negative_threshold" in kwargs
    extra = {}
    if masking:
        ra, rp, rn = a.clone(), p.clone(), n.clone()
        rp[G - 1] = ra[0]  # cross-rank false negative: rank 1's positive vs rank 0's anchor
        rn[0, 1] = ra[G - 1]  # and the other way round, via a hard negative
        extra = {"ref": (ra, rp, rn)}
    full = ref.infonce(
        a,
        p,
        n,
        hard_negative_weight=kwargs.get("hard_negative_weight", 0.0),
        symmetric=kwargs.get("symmetric", False),
        **extra,
    )
    loss = InfoNCELoss(**kwargs)

    def local(r):
        sl = slice(0, sizes[0]) if r == 0 else slice(sizes[0], G)
        args = (a[sl], p[sl], n[sl])
        kw = {}
        if masking:
            kw = {"reference_anchor": ra[sl], "reference_positive": rp[sl], "reference_negatives": rn[sl]}
        return args, kw

    packed = {}
    with monkeypatch.context() as m:  # record each rank's packed rows
        for r in (0, 1):
            world = _FakeWorld(m, r, None, sizes)
            args, kw = local(r)
            loss(*args, **kw)
            packed[r] = world.recorded
    losses = {}
    with monkeypatch.context() as m:
        for r in (0, 1):
            _FakeWorld(m, r, packed[1 - r], sizes)
            args, kw = local(r)
            losses[r] = loss(*args, **kw).loss.item()
    combined = (sizes[0] * losses[0] + sizes[1] * losses[1]) / G
    assert combined == pytest.approx(full, rel=1e-10)
