"""CLIP and SigLIP losses against hand formulas (float64) and open_clip's implementations."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hf_contrastive.vision.losses import CLIPLoss, SigLIPLoss


def _features(n=6, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    i = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    t = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    return i.requires_grad_(True), t.requires_grad_(True)


def _open_clip():
    spec = importlib.util.find_spec("open_clip")
    if spec is None:
        pytest.skip("open_clip is not installed (pip install --no-deps open-clip-torch==3.3.0)")
    path = Path(spec.submodule_search_locations[0]) / "loss.py"
    s = importlib.util.spec_from_file_location("_oc_loss", path)
    m = importlib.util.module_from_spec(s)
    s.loader.exec_module(m)
    return m


def test_clip_loss_by_hand():
    i, t = _features()
    s = 11.0
    out = CLIPLoss()(i, t, s)
    total = 0.0
    n = i.shape[0]
    for a in range(n):
        row = [s * float(i[a] @ t[b]) for b in range(n)]
        col = [s * float(t[a] @ i[b]) for b in range(n)]
        total += -(row[a] - math.log(sum(math.exp(x) for x in row)))
        total += -(col[a] - math.log(sum(math.exp(x) for x in col)))
    assert float(out.loss) == pytest.approx(total / (2 * n), rel=1e-12)
    assert set(out.components) >= {"image_to_text", "text_to_image", "logit_scale", "accuracy"}


def test_clip_label_smoothing_by_hand():
    i, t = _features()
    eps, s, n = 0.1, 7.0, i.shape[0]
    out = CLIPLoss(label_smoothing=eps)(i, t, s)
    logits = s * i.detach() @ t.detach().T

    def smoothed(z):
        logp = z.log_softmax(-1)
        target = torch.full_like(z, eps / n) + torch.eye(n, dtype=z.dtype) * (1 - eps)
        return float(-(target * logp).sum(-1).mean())

    assert float(out.loss) == pytest.approx((smoothed(logits) + smoothed(logits.T)) / 2, rel=1e-12)


def test_siglip_loss_by_hand():
    i, t = _features(5)
    s, b = 9.0, -2.5
    out = SigLIPLoss()(i, t, s, b)
    n = i.shape[0]
    total = 0.0
    for a in range(n):
        for c in range(n):
            z = 1.0 if a == c else -1.0
            x = s * float(i[a] @ t[c]) + b
            total += -math.log(1.0 / (1.0 + math.exp(-z * x)))
    assert float(out.loss) == pytest.approx(total / n, rel=1e-12)


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_equal_to_open_clip_one_process(kind):
    oc = _open_clip()
    results = []
    for impl in ("ours", "anchor"):
        i, t = _features(7, 10, seed=3)
        s = torch.tensor(12.0, dtype=torch.float64, requires_grad=True)
        b = torch.tensor(-3.0, dtype=torch.float64, requires_grad=True)
        if kind == "clip":
            loss = CLIPLoss()(i, t, s).loss if impl == "ours" else oc.ClipLoss()(i, t, s)
        else:
            loss = SigLIPLoss()(i, t, s, b).loss if impl == "ours" else oc.SigLipLoss()(i, t, s, b)
        loss.backward()
        results.append((loss.detach(), i.grad, t.grad, s.grad, b.grad))
    ours, anchor = results
    scale = max(1.0, float(ours[0]))
    assert float((ours[0] - anchor[0]).abs()) < 1e-13 * scale
    for a, b_ in zip(ours[1:], anchor[1:]):
        if a is None:
            assert b_ is None
            continue
        assert float((a - b_).abs().max()) < 1e-12 * max(1.0, float(b_.abs().max()))


def test_bad_inputs():
    i, t = _features(4)
    with pytest.raises(ValueError, match="same shape"):
        CLIPLoss()(i, t[:3], 10.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        CLIPLoss(label_smoothing=1.0)
    with pytest.raises(ValueError, match="scalar"):
        CLIPLoss()(i, t, torch.ones(2))
    with pytest.raises(ValueError, match=r"gathered batch 4 over 1 process"):
        SigLIPLoss()(i, t, 10.0, torch.zeros(4, 5))
    bias = torch.zeros(4, 4, dtype=torch.float64)
    assert torch.isfinite(SigLIPLoss()(i, t, 10.0, bias).loss)
    with pytest.raises(ValueError, match="NaN"):
        CLIPLoss()(i.detach().clone().fill_(float("nan")), t, 10.0)


def test_config_and_citation():
    assert "Radford" in CLIPLoss.citation and "Zhai" in SigLIPLoss.citation
    assert CLIPLoss(label_smoothing=0.1).config_dict()["label_smoothing"] == 0.1
    assert SigLIPLoss().config_dict()["local_loss"] is True
