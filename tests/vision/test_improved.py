"""The improved CLIP loss (CL2L) and its self-supervised add-ons, against hand computations in float64."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from hf_contrastive.core.losses.base import LossOutput
from hf_contrastive.vision.improved import (
    BarlowTwinsLoss,
    CrossDeviceBatchNorm1d,
    ImprovedCLIPConfig,
    ImprovedCLIPLoss,
    SiamLIPLoss,
    SimCLRImageLoss,
    SwALIPLoss,
    barlow_twins_loss,
    negative_cosine_loss,
    nt_xent_loss,
    sinkhorn_knopp,
    swapped_prediction_loss,
)
from tests.distributed_run import run_two_processes

F64 = torch.float64
ULP = torch.finfo(F64).eps
B, D, IMG, TXT, V = 6, 3, 8, 7, 2
# Small heads for tests; every dimension of the paper's defaults is a setting.
SMALL = dict(
    projection_dim=4,
    projector_hidden_size=6,
    simclr_hidden_size=6,
    simclr_dim=4,
    barlip_hidden_size=6,
    barlip_dim=5,
    siamlip_hidden_size=6,
    siamlip_dim=4,
    swalip_hidden_size=6,
    swalip_dim=4,
    swalip_prototypes=5,
)
ADDONS = {
    "simclr": dict(use_simclr=True, simclr_weight=0.7),
    "barlip": dict(use_barlip=True, barlip_weight=1.3),
    "siamlip": dict(use_siamlip=True, siamlip_weight=0.9),
    "byolip": dict(use_byolip=True, byolip_weight=1.1),
    "swalip": dict(use_swalip=True, swalip_weight=0.2),
}


@pytest.fixture(autouse=True)
def _float64_one_thread():
    """float64 for exact comparisons; one thread, since these tensors are tiny and the CPU is shared."""
    previous_dtype, previous_threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(F64)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(previous_dtype)
    torch.set_num_threads(previous_threads)


def inputs(seed: int = 0, batch: int = B, views: int = V) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "image_global": torch.randn(batch, D, generator=g),
        "text_global": torch.randn(batch, D, generator=g),
        "logit_scale": torch.tensor(7.5),
        "image_views_pooled": [torch.randn(batch, IMG, generator=g) for _ in range(views)],
        "text_views_pooled": [torch.randn(batch, TXT, generator=g) for _ in range(views)],
        "image_global_pooled": torch.randn(batch, IMG, generator=g),
        "text_global_pooled": torch.randn(batch, TXT, generator=g),
    }


def call(loss: ImprovedCLIPLoss, x: dict, pooled: bool = True) -> LossOutput:
    kw = {k: x[k] for k in ("image_global_pooled", "text_global_pooled")} if pooled else {}
    return loss(
        x["image_global"],
        x["text_global"],
        x["logit_scale"],
        x["image_views_pooled"],
        x["text_views_pooled"],
        **kw,
    )


def make(seed: int = 0, **settings) -> ImprovedCLIPLoss:
    torch.manual_seed(seed)
    return ImprovedCLIPLoss(IMG, TXT, ImprovedCLIPConfig(**{**SMALL, **settings}))


def hand_ce(logits: torch.Tensor, smoothing: float) -> float:
    """Cross-entropy with the diagonal as targets and label smoothing, one row at a time."""
    total = 0.0
    n, k = logits.shape
    for i in range(n):
        row = [float(v) for v in logits[i]]
        top = max(row)
        log_z = top + math.log(sum(math.exp(v - top) for v in row))
        nll = log_z - row[i]
        uniform = sum(log_z - v for v in row) / k
        total += (1 - smoothing) * nll + smoothing * uniform
    return total / n


def hand_clip(a: torch.Tensor, b: torch.Tensor, scale: float, smoothing: float = 0.0) -> float:
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    return (hand_ce(scale * a @ b.T, smoothing) + hand_ce(scale * b @ a.T, smoothing)) / 2


# ----------------------------------------------------------------------------------------------------------
# CL2L: global and augmented terms, combination
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("avg_or_sum", ["sum", "avg"])
def test_global_local_and_combination_by_hand(avg_or_sum):
    loss = make(loss_avg_or_sum=avg_or_sum)
    x = inputs()
    out = call(loss, x)
    scale = float(x["logit_scale"])
    l_g = hand_clip(x["image_global"], x["text_global"], scale)
    with torch.no_grad():  # the heads in training mode give the same batch statistics as inside the loss
        hi = [loss.image_projector(v) for v in x["image_views_pooled"]]
        ht = [loss.text_projector(v) for v in x["text_views_pooled"]]
    aug = float(loss.aug_logit_scale().detach())
    assert aug == pytest.approx(10.0, rel=1e-6)  # 1 / 0.1 (the stored log is float32)
    l_loc = sum(hand_clip(a, b, aug, 0.1) for a in hi for b in ht) / V**2
    comp = out.components
    tol = 1e3 * ULP * max(1.0, l_g, l_loc)  # a few hundred operations per term
    assert abs(float(comp["loss_global"]) - l_g) < tol
    assert abs(float(comp["loss_local"]) - l_loc) < tol
    factor = 2.0 if avg_or_sum == "sum" else 1.0
    expected = factor * (l_g + V * l_loc) / (1 + V)
    assert abs(float(out.loss.detach()) - expected) < tol * factor
    assert float(comp["cl2l"]) == pytest.approx(float(out.loss.detach()), rel=ULP * 10)


def test_label_smoothing_only_changes_the_augmented_terms():
    x = inputs(1)
    plain, smoothed = call(make(label_smoothing=0.0), x), call(make(label_smoothing=0.1), x)
    assert float(plain.components["loss_global"]) == float(smoothed.components["loss_global"])
    assert abs(float(plain.components["loss_local"]) - float(smoothed.components["loss_local"])) > 1e-3
    assert float(plain.components["aug_logit_scale"]) == float(smoothed.components["aug_logit_scale"])


def test_shared_projection_mode_uses_the_given_view_embeddings_and_global_scale():
    torch.manual_seed(0)
    loss = ImprovedCLIPLoss(D, D, separate_projector=False, label_smoothing=0.1)
    assert not any(True for _ in loss.parameters())
    x = inputs(2)
    x["image_views_pooled"] = [torch.randn(B, D) for _ in range(V)]
    x["text_views_pooled"] = [torch.randn(B, D) for _ in range(V)]
    out = call(loss, x, pooled=False)
    scale = float(x["logit_scale"])
    l_loc = (
        sum(hand_clip(a, b, scale, 0.1) for a in x["image_views_pooled"] for b in x["text_views_pooled"])
        / V**2
    )
    assert abs(float(out.components["loss_local"]) - l_loc) < 1e3 * ULP * l_loc
    assert "aug_logit_scale" not in out.components


def test_no_views_is_plain_clip_times_two():
    x = inputs(3, views=0)
    out = call(make(), x, pooled=False)
    l_g = hand_clip(x["image_global"], x["text_global"], float(x["logit_scale"]))
    assert abs(float(out.loss.detach()) - 2 * l_g) < 1e3 * ULP * l_g
    assert "loss_local" not in out.components


# ----------------------------------------------------------------------------------------------------------
# objectives as functions
# ----------------------------------------------------------------------------------------------------------


def test_nt_xent_against_hand_loop():
    g = torch.Generator().manual_seed(4)
    z1, z2, t = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g), 0.2
    z = torch.cat([F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)])
    n = z.shape[0]
    total = 0.0
    for i in range(n):
        positive = (i + 5) % n
        sims = [float(z[i] @ z[k]) / t for k in range(n) if k != i]
        total += -float(z[i] @ z[positive]) / t + math.log(sum(math.exp(s) for s in sims))
    assert abs(float(nt_xent_loss(z1, z2, t)) - total / n) < 1e3 * ULP * total / n


def test_barlow_twins_against_hand_computation():
    g = torch.Generator().manual_seed(5)
    z1, z2 = torch.randn(7, 4, generator=g), torch.randn(7, 4, generator=g) + 0.5
    lambd, scale, eps = 0.3, 0.025, 1e-5
    n, d = z1.shape

    def standardise(z):
        cols = []
        for j in range(d):
            col = [float(z[b, j]) for b in range(n)]
            mean = sum(col) / n
            var = sum((v - mean) ** 2 for v in col) / n
            cols.append([(v - mean) / math.sqrt(var + eps) for v in col])
        return cols

    a, b = standardise(z1), standardise(z2)
    total = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(a[i][k] * b[j][k] for k in range(n)) / n
            total += (1 - c) ** 2 if i == j else lambd * c**2
    assert (
        abs(float(barlow_twins_loss(z1, z2, lambd, scale, eps)) - scale * total) < 1e3 * ULP * scale * total
    )


def hand_sinkhorn(scores: torch.Tensor, eps: float, iterations: int) -> list[list[float]]:
    n, k = scores.shape
    q = [[math.exp(float(scores[b, p]) / eps) for b in range(n)] for p in range(k)]  # [K][B]
    total = sum(map(sum, q))
    q = [[v / total for v in row] for row in q]
    for _ in range(iterations):
        q = [[v / sum(row) / k for v in row] for row in q]
        col = [sum(q[p][b] for p in range(k)) for b in range(n)]
        q = [[q[p][b] / col[b] / n for b in range(n)] for p in range(k)]
    return [[q[p][b] * n for p in range(k)] for b in range(n)]  # [B][K]


def test_sinkhorn_equals_hand_loop_and_equipartitions():
    g = torch.Generator().manual_seed(6)
    scores = (
        F.normalize(torch.randn(9, 4, generator=g), dim=-1)
        @ F.normalize(torch.randn(5, 4, generator=g), dim=-1).T
    )
    q = sinkhorn_knopp(scores, epsilon=0.05, iterations=3)
    hand = torch.tensor(hand_sinkhorn(scores, 0.05, 3))
    assert q.shape == (9, 5) and q.dtype == F64
    assert torch.allclose(q, hand, rtol=1e-12, atol=0)
    # after the last (sample) normalisation every sample's assignment sums to 1
    assert torch.allclose(q.sum(1), torch.ones(9), rtol=0, atol=20 * ULP)
    # the prototype marginals approach N / K = 9 / 5 at every round, and reach it
    errors = [float((sinkhorn_knopp(scores, 0.5, it).sum(0) - 9 / 5).abs().max()) for it in (1, 2, 4, 8, 16)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    assert float((sinkhorn_knopp(scores, 0.5, 500).sum(0) - 9 / 5).abs().max()) < 1e-9


def test_sinkhorn_is_safe_for_small_epsilon():
    g = torch.Generator().manual_seed(7)
    scores = torch.rand(6, 4, generator=g) * 2 - 1
    assert bool(torch.isinf(torch.exp(scores / 1e-3)).any())  # the plain-domain exp overflows float64
    q = sinkhorn_knopp(scores, epsilon=1e-3, iterations=3)
    assert bool(torch.isfinite(q).all()) and torch.allclose(q.sum(1), torch.ones(6), rtol=0, atol=20 * ULP)
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        sinkhorn_knopp(scores, epsilon=0.0)


def test_swapped_prediction_against_hand_computation():
    g = torch.Generator().manual_seed(8)
    si, st = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    qi, qt = (
        torch.softmax(torch.randn(4, 3, generator=g), -1),
        torch.softmax(torch.randn(4, 3, generator=g), -1),
    )
    t = 0.1

    def ce(scores, targets):
        out = 0.0
        for r in range(4):
            row = [float(v) / t for v in scores[r]]
            log_z = math.log(sum(math.exp(v) for v in row))
            out += -sum(float(targets[r, k]) * (row[k] - log_z) for k in range(3))
        return out / 4

    expected = (ce(si, qt) + ce(st, qi)) / 2
    assert abs(float(swapped_prediction_loss(si, st, qi, qt, t)) - expected) < 1e3 * ULP * expected


# ----------------------------------------------------------------------------------------------------------
# add-on modules
# ----------------------------------------------------------------------------------------------------------


def test_siamlip_stops_the_gradient_of_its_targets():
    target = torch.randn(4, 3, requires_grad=True)
    prediction = torch.randn(4, 3, requires_grad=True)
    negative_cosine_loss(prediction, target).backward()
    assert target.grad is None and prediction.grad is not None

    torch.manual_seed(0)
    siam = SiamLIPLoss(IMG, TXT, hidden_size=6, out_dim=4)
    x, y = torch.randn(B, IMG), torch.randn(B, TXT)
    siam(x, y).loss.backward()
    ours = {k: p.grad.clone() for k, p in siam.named_parameters()}
    siam.zero_grad()
    # by hand, with the stop-gradient written out: the projections enter as targets detached
    vi, vt = siam.image_projector(x), siam.text_projector(y)
    pi, pt = siam.image_predictor(vi), siam.text_predictor(vt)

    def neg_cos(p, v):
        return 2 - 2 * (F.normalize(p, dim=-1) * F.normalize(v.detach(), dim=-1)).sum(-1).mean()

    ((neg_cos(pi, vt) + neg_cos(pt, vi)) / 2).backward()
    for k, p in siam.named_parameters():
        assert torch.allclose(
            ours[k], p.grad, rtol=0, atol=1e3 * ULP * max(1.0, float(p.grad.abs().max()))
        ), k


def test_byolip_target_is_an_ema_of_the_online_projector():
    torch.manual_seed(0)
    byol = SiamLIPLoss(IMG, TXT, hidden_size=6, out_dim=4, momentum=0.9)
    assert not any(p.requires_grad for p in byol.image_target.parameters())
    with torch.no_grad():
        for p in byol.image_projector.parameters():
            p.add_(torch.randn_like(p))
    before = {k: v.clone() for k, v in byol.image_target.encoder.named_parameters()}
    online = dict(byol.image_projector.named_parameters())
    byol.update_target()
    for k, v in byol.image_target.encoder.named_parameters():
        assert torch.allclose(
            v, 0.9 * before[k] + 0.1 * online[k], rtol=0, atol=8 * ULP * (1 + float(v.abs().max()))
        )
    # the targets of the loss are the target projector's outputs
    x, y = torch.randn(B, IMG), torch.randn(B, TXT)
    out = byol(x, y)
    pi, pt = byol.image_predictor(byol.image_projector(x)), byol.text_predictor(byol.text_projector(y))
    expected = (
        negative_cosine_loss(pi, byol.text_target(y)) + negative_cosine_loss(pt, byol.image_target(x))
    ) / 2
    assert float(out.loss.detach()) == pytest.approx(float(expected.detach()), rel=1e3 * ULP)
    assert set(out.components) == {"byolip"}


def test_barlip_and_swalip_modules_average_their_pairs():
    torch.manual_seed(0)
    bt = BarlowTwinsLoss(IMG, TXT, hidden_size=6, out_dim=5)
    images, texts = [torch.randn(B, IMG) for _ in range(2)], [torch.randn(B, TXT) for _ in range(2)]
    out = bt(images, texts, pairs=[(0, 1), (1, 0)])
    with torch.no_grad():
        expected = (
            barlow_twins_loss(bt.image_projector(images[0]), bt.text_projector(texts[1]))
            + barlow_twins_loss(bt.image_projector(images[1]), bt.text_projector(texts[0]))
        ) / 2
    assert float(out.loss.detach()) == pytest.approx(float(expected), rel=1e3 * ULP)
    sw = SwALIPLoss(IMG, TXT, hidden_size=6, out_dim=4, num_prototypes=5)
    out = sw(images[:1], texts[:1])
    with torch.no_grad():
        si, st = sw.scores(images[0], "image"), sw.scores(texts[0], "text")
        expected = swapped_prediction_loss(si, st, sinkhorn_knopp(si), sinkhorn_knopp(st), 0.1)
    assert float(out.loss.detach()) == pytest.approx(float(expected), rel=1e3 * ULP)
    assert sw.image_prototypes.shape == (5, 4) and not hasattr(sw, "text_prototypes")
    simclr = SimCLRImageLoss(IMG, hidden_size=6, out_dim=4)
    with pytest.raises(ValueError, match="at least 2 augmented image views"):
        simclr(images[:1])


def test_cross_device_batch_norm_is_plain_batch_norm_on_one_process():
    torch.manual_seed(0)
    ours, plain = CrossDeviceBatchNorm1d(5), torch.nn.BatchNorm1d(5)
    plain.load_state_dict(ours.state_dict())
    x = torch.randn(8, 5)
    assert torch.equal(ours(x), plain(x)) and torch.equal(ours.running_var, plain.running_var)


# ----------------------------------------------------------------------------------------------------------
# switches, gradients, config
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ADDONS))
def test_each_addon_switch_changes_only_its_component(name):
    x = inputs(9)
    full = make(label_smoothing=0.0, **ADDONS[name])
    base = make(label_smoothing=0.0)
    base.load_state_dict(full.state_dict(), strict=False)  # the shared heads get the same weights
    on, off = call(full, x), call(base, x)
    assert set(on.components) - set(off.components) == {name}
    for key, value in off.components.items():
        assert float(on.components[key]) == float(value), key
    weight = ADDONS[name][f"{name}_weight"]
    expected = float(off.loss.detach()) + weight * float(on.components[name])
    assert abs(float(on.loss.detach()) - expected) < 10 * ULP * abs(expected)
    assert float(on.components[name]) > 0


@pytest.mark.parametrize("momentum_target", [False, True])
def test_gradients_reach_every_trainable_head(momentum_target):
    addons = dict(use_simclr=True, use_barlip=True, use_swalip=True)
    addons["use_byolip" if momentum_target else "use_siamlip"] = True
    loss = make(label_smoothing=0.0, **addons)
    x = inputs(10)
    for k in ("image_views_pooled", "text_views_pooled"):
        for t in x[k]:
            t.requires_grad_(True)
    call(loss, x).loss.backward()
    trainable = [(k, p) for k, p in loss.named_parameters() if p.requires_grad]
    assert len(trainable) > 30
    no_grad = [k for k, p in trainable if p.grad is None or float(p.grad.abs().max()) == 0.0]
    assert no_grad == []
    assert all(t.grad is not None for t in x["image_views_pooled"] + x["text_views_pooled"])
    frozen = [k for k, p in loss.named_parameters() if not p.requires_grad]
    assert bool(frozen) == momentum_target and all("_target." in k for k in frozen)


def test_config_round_trip_and_defaults():
    defaults = ImprovedCLIPConfig()
    assert (defaults.projector_hidden_size, defaults.projector_layers, defaults.aug_logit_scale_init) == (
        4096,
        3,
        10.0,
    )
    assert (defaults.label_smoothing, defaults.loss_avg_or_sum, defaults.byolip_momentum) == (
        0.1,
        "sum",
        0.99,
    )
    assert (defaults.barlip_lambda, defaults.barlip_scale, defaults.barlip_dim) == (5e-3, 0.025, 8192)
    assert (defaults.swalip_weight, defaults.swalip_prototypes, defaults.swalip_temperature) == (
        0.2,
        3000,
        0.1,
    )
    assert (defaults.swalip_iterations, defaults.swalip_epsilon) == (3, 0.05)
    loss = make(label_smoothing=0.0, use_barlip=True, use_swalip=True, gather=False)
    values = json.loads(json.dumps(loss.config_dict()))
    rebuilt = ImprovedCLIPLoss.from_config_dict(values)
    assert rebuilt.config == loss.config and (rebuilt.image_dim, rebuilt.text_dim) == (IMG, TXT)
    assert ImprovedCLIPConfig.from_dict(loss.config.to_dict()) == loss.config
    assert set(rebuilt.state_dict()) == set(loss.state_dict())
    assert "fini2023improved" in loss.citation and "zbontar2021barlow" in loss.citation
    assert "caron2020swav" in loss.citation
    with pytest.raises(ValueError, match="unknown settings"):
        ImprovedCLIPConfig.from_dict({"use_barlip": True, "use_barlow": True})


# ----------------------------------------------------------------------------------------------------------
# bad inputs
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings, match",
    [
        (dict(simclr_weight=-0.1), "simclr_weight must be a finite number >= 0"),
        (dict(swalip_weight=-1.0), "swalip_weight must be a finite number >= 0"),
        (dict(label_smoothing=1.0), r"label_smoothing must be in \[0, 1\)"),
        (dict(byolip_momentum=1.0), r"byolip_momentum must be in \[0, 1\)"),
        (dict(use_siamlip=True, use_byolip=True), "not both"),
        (dict(use_swalip=True), "without label smoothing"),
        (dict(loss_avg_or_sum="mean"), "'avg' or 'sum'"),
        (dict(swalip_prototypes=1), "swalip_prototypes must be an int >= 2"),
        (dict(projection_dim=0), "projection_dim must be an int >= 1"),
    ],
)
def test_bad_settings(settings, match):
    with pytest.raises(ValueError, match=match):
        ImprovedCLIPConfig(**settings)


def test_bad_inputs():
    loss = make(use_simclr=True, use_barlip=True)
    x = inputs(11)

    def variant(**changes):
        return {**x, **changes}

    cases = [
        (variant(text_global=torch.randn(B - 1, D)), "same shape"),
        (variant(text_views_pooled=x["text_views_pooled"][:1]), "2 image view.*1 text view"),
        (variant(image_views_pooled=[torch.randn(B - 1, IMG), torch.randn(B - 1, IMG)]), "batch size"),
        (variant(image_views_pooled=[torch.randn(B, IMG + 1)] * 2), f"expected {IMG}"),
        (variant(logit_scale=torch.tensor(-1.0)), "logit_scale must be one finite number > 0"),
        (variant(image_global_pooled=torch.randn(B, IMG + 2)), "image_global_pooled must have shape"),
    ]
    for case, match in cases:
        with pytest.raises(ValueError, match=match):
            call(loss, case)
    with pytest.raises(ValueError, match="both image_global_pooled and text_global_pooled"):
        loss(x["image_global"], x["text_global"], 5.0, [], [], image_global_pooled=x["image_global_pooled"])
    with pytest.raises(ValueError, match="at least 2 augmented image views"):
        call(loss, inputs(11, views=1))
    bad = variant(image_views_pooled=[x["image_views_pooled"][0], torch.full((B, IMG), float("nan"))])
    with pytest.raises(ValueError, match="non-finite"):
        call(loss, bad)
    with pytest.raises(ValueError, match="image_dim must be an int > 0"):
        ImprovedCLIPLoss(0, TXT)


# ----------------------------------------------------------------------------------------------------------
# two processes = one process on the whole batch
# ----------------------------------------------------------------------------------------------------------

WORKER = Path(__file__).with_name("improved_worker.py")


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory) -> dict:
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available")
    out = tmp_path_factory.mktemp("improved_two_proc") / "results.json"
    run_two_processes(WORKER, out)
    return json.loads(out.read_text())


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["cl2l_simclr_barlip", "cl2l_siamlip_avg", "cl2l_byolip_swalip"])
def test_two_processes_equal_one_process(two_process_results, scenario):
    r = two_process_results[scenario]
    # float64 throughout: the gaps are summation-order noise, a few thousand ulps of the magnitudes at most
    assert r["loss_abs_diff"] < 1e-12 * max(1.0, r["loss_single"]), r
    assert r["grad_max_abs_diff"] < 1e-12 * max(1.0, r["grad_max_abs"]), r
    assert r["n_grads"] > 40 and r["missing_grads"] == [], r
    assert r["bn_running_stats_diff"] < 1e-12, r
    assert max(r["component_abs_diffs"].values()) < 1e-12 * max(1.0, r["loss_single"]), r
    assert r["param_after_step_diff"] < 1e-12 * max(1.0, r["grad_max_abs"]), r
    assert r["has_target"] == (scenario == "cl2l_byolip_swalip")
    # without gathering, the two-process loss is different: the comparison has teeth
    assert r["control_no_gather_loss_abs_diff"] > 1e-3, r
