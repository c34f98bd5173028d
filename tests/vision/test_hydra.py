"""Hydra / SimLAP: gate, logits, loss, pair sampling, probe isolation, saving, bad inputs, training, recipe, and two
processes against one."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image
from transformers import AutoModel, ResNetConfig, ViTConfig

from hf_contrastive.recipes import register_recipe_task, run_recipe
from hf_contrastive.vision.hydra import (
    KEYWORD_GROUPS,
    HydraConfig,
    HydraGate,
    HydraImageCollator,
    HydraLoss,
    HydraModel,
    HydraTrainer,
    HydraTrainingArguments,
    coco_keyword_labels,
    gated_view,
    hydra_logits,
    keyword_label,
    load_image_folder,
    majority_rate,
    sample_target_labels,
    vision_feature_size,
)
from hf_contrastive.vision.hydra_recipes import HYDRA_TASK
from tests.distributed_run import run_two_processes

# float64 throughout: sums of at most a few hundred terms of size <= 1e2 are exact to ~1e-12.
TOL = 1e-10
HEAD = {"label_embedding_dim": 6, "gate_hidden_size": 10, "projector_hidden_size": 12, "feature_dim": 8}


def tiny_vit(image_size: int = 16) -> ViTConfig:
    return ViTConfig(
        image_size=image_size,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=24,
    )


def tiny_model(
    variant: str = "gated_cosine", labels=("cat", "dog", "car"), seed: int = 0, **kw
) -> HydraModel:
    torch.manual_seed(seed)
    settings = {**HEAD, **kw}
    return HydraModel.from_backbone(
        tiny_vit(), labels=list(labels), logit_variant=variant, **settings
    ).double()


def randomise_batch_norms(module: torch.nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in module.modules():
            if isinstance(bn, torch.nn.BatchNorm1d):
                bn.weight.copy_(torch.rand(bn.weight.shape, generator=g, dtype=bn.weight.dtype) + 0.5)
                bn.bias.copy_(torch.randn(bn.bias.shape, generator=g, dtype=bn.bias.dtype))
                bn.running_mean.copy_(
                    torch.randn(bn.running_mean.shape, generator=g, dtype=bn.running_mean.dtype)
                )
                bn.running_var.copy_(
                    torch.rand(bn.running_var.shape, generator=g, dtype=bn.running_var.dtype) + 0.5
                )


# -- hand references ------------------------------------------------------------------------------------------


def hand_gate(gate: HydraGate, y1: torch.Tensor, y2: torch.Tensor, training: bool) -> torch.Tensor:
    """sigmoid(MLP((E[y1] + E[y2]) / 2)), MLP = ReLU, BN, Linear, ReLU, BN, Linear, written out."""
    relu1, bn1, lin1, relu2, bn2, lin2 = gate.mlp

    def bn(x, layer):
        if training:
            mean, var = x.mean(0), x.var(0, unbiased=False)
        else:
            mean, var = layer.running_mean, layer.running_var
        return (x - mean) / torch.sqrt(var + layer.eps) * layer.weight + layer.bias

    E = gate.label_embeddings.weight
    x = (E[y1] + E[y2]) / 2
    x = bn(torch.clamp(x, min=0), bn1) @ lin1.weight.T + lin1.bias
    x = bn(torch.clamp(x, min=0), bn2) @ lin2.weight.T + lin2.bias
    return 1 / (1 + torch.exp(-x))


def unit(v: torch.Tensor) -> torch.Tensor:
    return v / torch.sqrt((v * v).sum())


def hand_logit(z_i, z_k, g_i, variant: str, scale) -> torch.Tensor:
    if variant == "gated_cosine":  # variant A: cos(n(g * n(z_i)), n(g * n(z_k))) / temperature
        return (unit(g_i * unit(z_i)) * unit(g_i * unit(z_k))).sum() * scale
    return (unit(z_i) * g_i * g_i * unit(z_k)).sum() * scale  # variant B


def hand_loss(z, g, y1, y2, variant, scale, probe_logits=None, probe_weight=1.0) -> torch.Tensor:
    """Loop over anchors: P = {k != i: y_k = y2_i}, N = {k: y_k not in {y1_i, y2_i}}, centred rows."""
    n = z.shape[0]
    total, anchors = torch.zeros((), dtype=z.dtype), 0
    for i in range(n):
        row = torch.stack([hand_logit(z[i], z[k], g[i], variant, scale) for k in range(n)])
        row = row - row.mean()
        pos = [k for k in range(n) if k != i and int(y1[k]) == int(y2[i])]
        neg = [k for k in range(n) if int(y1[k]) not in (int(y1[i]), int(y2[i]))]
        if not pos:
            continue
        terms = []
        for k in pos:
            denominator = torch.exp(row[k]) + sum(
                (torch.exp(row[m]) for m in neg), torch.zeros((), dtype=z.dtype)
            )
            terms.append(torch.log(denominator) - row[k])
        total = total + sum(terms) / len(pos)
        anchors += 1
    loss = total / anchors if anchors else total * 0
    if probe_logits is not None:
        loss = loss + probe_weight * F.cross_entropy(probe_logits, y1)
    return loss


# -- gate and logits ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False])
def test_gate_matches_the_formula(training):
    torch.manual_seed(0)
    gate = HydraGate(num_labels=5, label_embedding_dim=6, hidden_size=7, feature_dim=4).double()
    with torch.no_grad():
        gate.label_embeddings.weight.normal_()
    randomise_batch_norms(gate)
    gate.train(training)
    y1, y2 = torch.tensor([0, 1, 4, 2, 2, 3]), torch.tensor([3, 1, 0, 2, 4, 4])
    got = gate(y1, y2)
    assert got.shape == (6, 4) and bool(((got > 0) & (got < 1)).all())
    torch.testing.assert_close(got, hand_gate(gate, y1, y2, training), rtol=0, atol=TOL)
    # the pair is unordered: (y1, y2) and (y2, y1) share one gate
    gate.eval()
    torch.testing.assert_close(gate(y1, y2), gate(y2, y1), rtol=0, atol=TOL)


@pytest.mark.parametrize("variant, scale", [("gated_cosine", 1 / 0.1), ("gated_scaled", math.exp(1.7))])
def test_both_logit_variants_by_hand(variant, scale):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(5, 4, generator=g, dtype=torch.float64) * 3
    rows = torch.randn(7, 4, generator=g, dtype=torch.float64)
    gates = torch.rand(5, 4, generator=g, dtype=torch.float64)
    got = hydra_logits(z, gates, rows, variant, scale)
    want = torch.stack(
        [
            torch.stack([hand_logit(z[i], rows[k], gates[i], variant, scale) for k in range(7)])
            for i in range(5)
        ]
    )
    torch.testing.assert_close(got, want, rtol=0, atol=TOL * scale)
    # the anchor's gated view against itself: 1/temperature in A; |g * n(z)|^2 * scale in B
    view = gated_view(z, gates, variant)
    diag = hydra_logits(z, gates, z, variant, scale).diagonal()
    torch.testing.assert_close(diag, (view * view).sum(-1) * scale, rtol=0, atol=TOL * scale)


@pytest.mark.parametrize("variant", ["gated_cosine", "gated_scaled"])
def test_model_loss_equals_the_hand_loss_on_its_outputs(variant):
    model = tiny_model(variant)
    randomise_batch_norms(model.gate)
    if variant == "gated_scaled":
        with torch.no_grad():
            model.logit_scale.fill_(1.3)  # not the initial log 10: the model must use its parameter
    model.eval()
    pixels = torch.randn(8, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y1, y2 = torch.tensor([0, 1, 2, 0, 1, 2, 0, 0]), torch.tensor([1, 1, 0, 2, 0, 0, 2, 1])
    out = model(pixels, labels=y1, target_labels=y2)
    torch.testing.assert_close(out.gates, model.pair_gates(y1, y2), rtol=0, atol=0)
    torch.testing.assert_close(
        out.gates, model.pair_gates(["cat", "dog", "car", "cat", "dog", "car", "cat", "cat"], y2)
    )
    scale = 1 / 0.1 if variant == "gated_cosine" else math.exp(1.3)
    want = hand_loss(out.embeddings, out.gates, y1, y2, variant, scale, out.probe_logits)
    torch.testing.assert_close(out.loss, want, rtol=0, atol=TOL * scale)
    torch.testing.assert_close(
        out.gated_embeddings, gated_view(out.embeddings, out.gates, variant), rtol=0, atol=TOL
    )


# -- the loss -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["gated_cosine", "gated_scaled"])
def test_loss_and_gradients_match_a_loop_over_anchors(variant):
    g = torch.Generator().manual_seed(2)
    # class 3 occurs once: its anchor with y2 = 3 has no positive (itself excluded) and is left out
    y1 = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 0, 1])
    y2 = torch.tensor([1, 0, 2, 1, 0, 0, 3, 3, 2, 1])
    z = torch.randn(10, 6, generator=g, dtype=torch.float64, requires_grad=True)
    gates = torch.rand(10, 6, generator=g, dtype=torch.float64).requires_grad_()
    probe = torch.randn(10, 4, generator=g, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(math.log(10.0), dtype=torch.float64, requires_grad=True)
    loss_fn = HydraLoss(num_labels=4, logit_variant=variant, probe_weight=0.3)
    logit_scale = scale.exp() if variant == "gated_scaled" else None
    out = loss_fn(z, gates, y1, y2, logit_scale=logit_scale, probe_logits=probe)
    want = hand_loss(
        z, gates, y1, y2, variant, 10.0 if variant == "gated_cosine" else scale.exp(), probe, 0.3
    )
    torch.testing.assert_close(out.loss, want, rtol=0, atol=TOL)
    inputs = [z, gates, probe] + ([scale] if variant == "gated_scaled" else [])
    got_grads = torch.autograd.grad(out.loss, inputs)
    want_grads = torch.autograd.grad(want, inputs)
    for got, ref in zip(got_grads, want_grads):
        torch.testing.assert_close(got, ref, rtol=0, atol=TOL)
    assert float(out.components["anchors_with_positives"]) == pytest.approx(9 / 10)
    torch.testing.assert_close(out.components["probe"], F.cross_entropy(probe, y1).detach())


def test_anchors_without_negatives_give_zero_terms_and_finite_gradients():
    y1, y2 = torch.tensor([0, 0, 1, 1]), torch.tensor([1, 1, 0, 0])  # every pair is {0, 1}: no negatives
    z = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    gates = torch.full((4, 3), 0.5, dtype=torch.float64, requires_grad=True)
    out = HydraLoss(num_labels=2)(z, gates, y1, y2)
    assert float(out.loss.detach()) == 0.0
    out.loss.backward()
    assert bool(torch.isfinite(z.grad).all()) and bool(torch.isfinite(gates.grad).all())


def test_no_positive_in_the_batch_gives_a_zero_loss_with_a_warning(caplog):
    z = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    gates = torch.rand(3, 4, dtype=torch.float64)
    with caplog.at_level(logging.WARNING, logger="hf_contrastive.vision.hydra"):
        out = HydraLoss(num_labels=3)(z, gates, torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]))
    assert float(out.loss.detach()) == 0.0 and out.loss.requires_grad
    assert float(out.components["anchors_with_positives"]) == 0.0
    assert "no anchor of the batch has a positive" in caplog.text


def test_centring_does_not_change_the_loss():
    """Shifting every logit of a row leaves the loss as it is: centring is for range only."""
    y1, y2 = torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([1, 2, 0, 0, 0, 1])
    z = torch.randn(6, 5, dtype=torch.float64)
    gates = torch.rand(6, 5, dtype=torch.float64)
    loss_fn = HydraLoss(num_labels=3, logit_variant="gated_scaled", probe_weight=0)
    a = loss_fn(z, gates, y1, y2, logit_scale=torch.tensor(10.0, dtype=torch.float64)).loss
    b = hand_loss(z, gates, y1, y2, "gated_scaled", 10.0)
    torch.testing.assert_close(a, b, rtol=0, atol=TOL)


# -- pair sampling ------------------------------------------------------------------------------------------


def test_identical_pairs_repeat_the_label():
    labels = torch.tensor([3, 0, 2, 2, 1])
    assert torch.equal(sample_target_labels(labels, "identical"), labels)


def test_arbitrary_pairs_permute_the_batch_and_replay_with_a_seed():
    labels = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 4, 1])
    a = sample_target_labels(labels, "arbitrary", torch.Generator().manual_seed(7))
    b = sample_target_labels(labels, "arbitrary", torch.Generator().manual_seed(7))
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and torch.equal(a, labels[perm])
    assert sorted(a.tolist()) == sorted(labels.tolist())
    draws = {
        tuple(sample_target_labels(labels, "arbitrary", torch.Generator().manual_seed(s)).tolist())
        for s in range(5)
    }
    assert len(draws) > 1


def test_distinct_pairs_never_repeat_the_label_and_cover_the_others():
    labels = torch.tensor([0, 1, 2, 3, 4] * 4)
    seen = {c: set() for c in range(5)}
    generator = torch.Generator().manual_seed(0)
    for _ in range(60):
        y2 = sample_target_labels(labels, "distinct", generator, num_labels=6)
        assert bool((y2 != labels).all()) and int(y2.min()) >= 0 and int(y2.max()) < 6
        for a, b in zip(labels.tolist(), y2.tolist()):
            seen[a].add(b)
    assert all(seen[c] == set(range(6)) - {c} for c in range(5))  # the whole label map, class 5 included
    # without num_labels: only the classes of the batch
    y2 = sample_target_labels(torch.tensor([1, 1, 4, 4]), "distinct", torch.Generator().manual_seed(1))
    assert y2.tolist() == [4, 4, 1, 1]
    replay = [sample_target_labels(labels, "distinct", torch.Generator().manual_seed(3), 6) for _ in range(2)]
    assert torch.equal(*replay)


def test_sampling_refuses_bad_requests():
    with pytest.raises(ValueError, match="at least two classes"):
        sample_target_labels(torch.tensor([2, 2, 2]), "distinct")
    with pytest.raises(ValueError, match="at least two classes"):
        sample_target_labels(torch.tensor([0, 0]), "distinct", num_labels=1)
    with pytest.raises(ValueError, match="unknown pair_type"):
        sample_target_labels(torch.tensor([0, 1]), "random")
    with pytest.raises(ValueError, match="label map of 3 classes"):
        sample_target_labels(torch.tensor([0, 3]), "arbitrary", num_labels=3)
    with pytest.raises(TypeError, match="integer class ids"):
        sample_target_labels(torch.tensor([0.0, 1.0]), "identical")


def test_forward_draws_targets_by_the_configured_pair_type():
    model = tiny_model(pair_type="distinct").eval()
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    torch.manual_seed(5)
    out = model(torch.randn(6, 3, 16, 16, dtype=torch.float64), labels=labels)
    assert bool((out.target_labels != labels).all())
    model.config.pair_type = "identical"
    out = model(torch.randn(6, 3, 16, 16, dtype=torch.float64), labels=labels)
    assert torch.equal(out.target_labels, labels)


# -- the probe ------------------------------------------------------------------------------------------


def test_the_probe_learns_from_detached_features_only():
    model = tiny_model().train()
    pixels = torch.randn(6, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    labels, target = torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([1, 2, 0, 1, 2, 0])
    out = model(pixels, labels=labels, target_labels=target)
    F.cross_entropy(out.probe_logits, labels).backward()
    assert model.probe.weight.grad is not None and float(model.probe.weight.grad.abs().sum()) > 0
    others = [p.grad for n, p in model.named_parameters() if not n.startswith("probe.")]
    assert all(g is None for g in others)
    # the full loss: the backbone's gradient is the same with or without the probe term
    grads = {}
    for weight in (1.0, 0.0):
        model.zero_grad()
        model.config.probe_weight = weight
        model(pixels, labels=labels, target_labels=target).loss.backward()
        grads[weight] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    backbone = [n for n in grads[0.0] if n.startswith("backbone.")]
    assert backbone
    for name in backbone:
        torch.testing.assert_close(grads[1.0][name], grads[0.0][name], rtol=0, atol=0)
    assert (
        float(grads[1.0]["probe.weight"].abs().sum()) > 0
        and float(grads[0.0]["probe.weight"].abs().sum()) == 0
    )


# -- saving -------------------------------------------------------------------------------------------------


def settings(config: HydraConfig) -> dict:
    """The config as a dict without what transformers records about the load (source path, dtype)."""
    d = config.to_dict()
    d["backbone_config"] = {
        k: v for k, v in d["backbone_config"].items() if k not in ("_name_or_path", "dtype")
    }
    return {k: v for k, v in d.items() if k not in ("_name_or_path", "dtype")}


def test_save_and_load_round_trip_exactly(tmp_path):
    model = tiny_model("gated_scaled", pooling="mean", probe_weight=0.4)
    pixels = torch.randn(6, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(pixels, labels=labels).loss.backward()  # one step: moved weights, scale and BatchNorm statistics
    optimizer.step()
    model.save_pretrained(tmp_path / "hydra")
    for loaded in (
        AutoModel.from_pretrained(tmp_path / "hydra"),
        HydraModel.from_pretrained(tmp_path / "hydra"),
    ):
        assert type(loaded) is HydraModel
        loaded = loaded.double()
        assert settings(loaded.config) == settings(model.config)
        mine, theirs = model.state_dict(), loaded.state_dict()
        assert set(mine) == set(theirs)
        for key in mine:
            assert torch.equal(mine[key], theirs[key]), key
        model.eval(), loaded.eval()
        a = model(pixels, labels=labels, target_labels=labels.flip(0))
        b = loaded(pixels, labels=labels, target_labels=labels.flip(0))
        # same weights bit for bit; the outputs agree to float64 rounding (the attention kernel may sum in
        # another order on freshly loaded tensors)
        torch.testing.assert_close(a.loss, b.loss, rtol=0, atol=TOL)
        torch.testing.assert_close(a.embeddings, b.embeddings, rtol=0, atol=TOL)
        assert torch.equal(a.gates, b.gates) and torch.equal(a.probe_logits, b.probe_logits)
        model.train()
    config = json.loads((tmp_path / "hydra" / "config.json").read_text())
    assert config["model_type"] == "hydra_encoder" and config["label2id"] == {"cat": 0, "dog": 1, "car": 2}
    assert config["logit_variant"] == "gated_scaled" and config["pooling"] == "mean"
    card = (tmp_path / "hydra" / "README.md").read_text()
    assert "`cat`, `dog`, `car`" in card and "Rethinking Positive Pairs" in card and "learnable scale" in card


# -- backbones ------------------------------------------------------------------------------------------


def test_pooling_per_backbone_family():
    torch.manual_seed(0)
    resnet = ResNetConfig(embedding_size=8, hidden_sizes=[8, 12], depths=[1, 1], num_channels=3)
    assert vision_feature_size(resnet) == 12 and vision_feature_size(tiny_vit()) == 16
    model = HydraModel.from_backbone(resnet, num_labels=2, image_size=16, **HEAD).double().eval()
    pixels = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    out = model(pixels)
    states = model.backbone(pixel_values=pixels).last_hidden_state  # [B, C, h, w]
    torch.testing.assert_close(out.backbone_features, states.mean(dim=(2, 3)), rtol=0, atol=TOL)
    model.config.pooling = "cls"
    with pytest.raises(ValueError, match="token states"):
        model(pixels)
    vit = tiny_model(pooling="mean").eval()
    pixels = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    states = vit.backbone(pixel_values=pixels).last_hidden_state
    torch.testing.assert_close(vit(pixels).backbone_features, states.mean(dim=1), rtol=0, atol=0)
    vit.config.pooling = "cls"
    torch.testing.assert_close(vit(pixels).backbone_features, states[:, 0], rtol=0, atol=0)


# -- bad inputs ---------------------------------------------------------------------------------------------


def test_bad_inputs_are_refused_at_the_boundary():
    model = tiny_model().eval()
    pixels = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    with pytest.raises(
        ValueError, match=r"target_labels hold class id\(s\) \[5\] outside the label map of 3 classes"
    ):
        model(pixels, labels=torch.tensor([0, 1, 2]), target_labels=torch.tensor([0, 5, 1]))
    with pytest.raises(ValueError, match="label map of 3 classes"):
        model(pixels, labels=torch.tensor([0, -1, 2]))
    with pytest.raises(ValueError, match="'zebra' is not in the label map of 3 classes"):
        model.pair_gates("zebra", "cat")
    with pytest.raises(ValueError, match="label map of 3 classes"):
        model.pair_gates([0, 1], [1, 3])
    with pytest.raises(TypeError, match="integer class ids"):
        model(pixels, labels=torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="without labels"):
        model(pixels, target_labels=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        model(torch.randn(3, 16, 16))
    loss = HydraLoss(num_labels=3)
    z, gates = torch.randn(2, 4), torch.rand(2, 4)
    with pytest.raises(ValueError, match="label map of 3 classes"):
        loss(z, gates, torch.tensor([0, 1]), torch.tensor([1, 7]))
    with pytest.raises(ValueError, match="only with 'gated_scaled'"):
        loss(z, gates, torch.tensor([0, 1]), torch.tensor([1, 0]), logit_scale=10.0)
    with pytest.raises(ValueError, match="needs logit_scale"):
        HydraLoss(3, logit_variant="gated_scaled")(z, gates, torch.tensor([0, 1]), torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="non-finite"):
        loss(torch.full((2, 4), float("nan")), gates, torch.tensor([0, 1]), torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="shape of embeddings"):
        loss(z, torch.rand(2, 3), torch.tensor([0, 1]), torch.tensor([1, 0]))
    for bad in (
        {"pair_type": "random"},
        {"logit_variant": "cosine"},
        {"logit_temperature": 0.0},
        {"pooling": "max"},
    ):
        with pytest.raises(ValueError):
            HydraConfig(backbone_config=tiny_vit(), **bad)
    with pytest.raises(ValueError, match="labels=\\[...\\] or num_labels"):
        HydraModel.from_backbone(tiny_vit())
    collator = HydraImageCollator(image_size=16, label2id={"cat": 0})
    image = Image.new("RGB", (20, 24))
    with pytest.raises(ValueError, match="'dog' is not in the label map of 1 classes"):
        collator([{"image": image, "label": "dog"}])
    with pytest.raises(ValueError, match="no 'label' column"):
        collator([{"image": image}])


# -- data, collator -----------------------------------------------------------------------------------------


def test_keyword_labels_vote_over_captions():
    names = list(KEYWORD_GROUPS)
    # animal 2 captions, furniture 2: the tie goes to the earlier group
    assert names[keyword_label(["A dog on a sofa.", "A dog sleeps.", "An empty sofa."])] == "animal"
    assert names[keyword_label(["A man rides a bus.", "A man and a woman."])] == "person"
    assert keyword_label(["A red stop sign.", "A kite in the sky."]) is None
    assert majority_rate([0, 0, 1, 2], [0, 1, 1, 0]) == 0.5


def test_collator_resizes_and_normalises():
    image = Image.fromarray((np.arange(24 * 20 * 3) % 256).astype("uint8").reshape(24, 20, 3))
    batch = HydraImageCollator(image_size=8, image_mean=(0.5, 0.4, 0.3), image_std=(0.2, 0.2, 0.25))(
        [{"image": image, "label": 1}, {"image": image, "label": np.int64(0)}]
    )
    resized = np.asarray(image.resize((8, 8), Image.BILINEAR), dtype=np.float64) / 255
    want = (resized - np.array([0.5, 0.4, 0.3])) / np.array([0.2, 0.2, 0.25])
    torch.testing.assert_close(
        batch["pixel_values"][0].double(), torch.from_numpy(want).permute(2, 0, 1), rtol=0, atol=1e-5
    )
    assert batch["labels"].tolist() == [1, 0]


def test_coco_keyword_labels_on_coco_mini(shared_data, caplog):
    with caplog.at_level(logging.WARNING, logger="hf_contrastive.vision.hydra"):
        train = coco_keyword_labels("train", root=shared_data / "vision" / "coco-mini")
    assert train.features["label"].names == list(KEYWORD_GROUPS)
    assert 60 <= len(train) < 80 and "dropped" in caplog.text
    assert len(set(train["label"])) == len(KEYWORD_GROUPS)
    assert all(os.path.isfile(p) for p in train["image"][:3])


# -- training and the recipe ----------------------------------------------------------------------------------


def write_image_folder(root: Path, classes=("cat", "dog", "car"), per_class: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            arr = (rng.random((20, 18, 3)) * 80 + c * 80).astype("uint8")
            Image.fromarray(arr).save(root / name / f"{i}.png")
    return root


@pytest.mark.slow
def test_trainer_trains_logs_components_and_saves(tmp_path):
    data = load_image_folder(write_image_folder(tmp_path / "images"))
    assert data.features["label"].names == ["car", "cat", "dog"]
    torch.manual_seed(0)
    model = HydraModel.from_backbone(tiny_vit(), labels=data.features["label"].names, **HEAD)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = HydraTrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=6,
        max_steps=3,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
    )
    trainer = HydraTrainer(model=model, args=args, train_dataset=data, eval_dataset=data)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logged and {"contrastive", "probe", "anchors_with_positives"} <= set(logged[0])
    assert any(
        not torch.equal(before[n], p) for n, p in model.named_parameters() if n.startswith("backbone.")
    )
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_probe_accuracy"] <= 1.0 and math.isfinite(metrics["eval_loss"])
    trainer.save_model(str(tmp_path / "final"))
    assert type(AutoModel.from_pretrained(tmp_path / "final")) is HydraModel
    with pytest.raises(TypeError, match="needs a HydraModel"):
        HydraTrainer(model=torch.nn.Linear(2, 2), args=args)


@pytest.mark.slow
def test_recipe_task_runs_a_tiny_recipe(tmp_path):
    register_recipe_task(HYDRA_TASK, replace=True)
    folder = write_image_folder(tmp_path / "images")
    recipe = {
        "task": "hydra",
        "model": {"backbone_config": {**tiny_vit().to_diff_dict(), "model_type": "vit"}, **HEAD},
        "data": {"train": {"type": "imagefolder", "path": str(folder)}, "eval": {"type": "imagefolder", "path": str(folder)}},
        "method": {"pair_type": "distinct", "logit_variant": "gated_scaled"},
        "args": {"output_dir": str(tmp_path / "out"), "max_steps": 2, "per_device_train_batch_size": 6,
                 "save_strategy": "no", "disable_tqdm": True, "use_cpu": True},
    }  # fmt: skip
    results = run_recipe(recipe)
    assert results["classes"] == ["car", "cat", "dog"] and results["majority_rate"] == pytest.approx(1 / 3)
    assert "eval_probe_accuracy" in results["before"] and "eval_probe_accuracy" in results["after"]
    saved = AutoModel.from_pretrained(results["output"])
    assert saved.config.pair_type == "distinct" and saved.config.logit_variant == "gated_scaled"
    assert saved.config.feature_dim == HEAD["feature_dim"]
    bad = {**recipe, "method": {"pair_type": "sideways"}}
    with pytest.raises(ValueError, match="pair_type"):
        run_recipe(bad)


# -- two processes ----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed/gloo missing"
)
def test_two_processes_equal_one(tmp_path):
    out = tmp_path / "results.json"
    run_two_processes(Path(__file__).with_name("hydra_worker.py"), out, timeout=240)
    results = json.loads(out.read_text())
    for name, r in results.items():
        assert r["grads_missing"] == [], (name, r)
        assert r["loss_abs_diff"] <= TOL * max(1.0, abs(r["loss_single"])), (name, r)
        assert r["grad_max_abs_diff"] <= TOL * max(1.0, r["grad_max_abs"]), (name, r)
        assert r["control_no_gather_loss_abs_diff"] > 1e-3, (name, r)  # without gathering the loss differs
