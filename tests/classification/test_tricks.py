"""Vega v1's fine-tuning tricks against hand computations: FreeLB, SMART, EMA self-distillation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_models import bert_config, bert_tokenizer
from transformers import BertForSequenceClassification, EvalPrediction

from hf_contrastive.classification import (
    ClassificationTrainer,
    ClassificationTricksConfig,
    classification_metrics,
    initial_perturbation,
    normalized_ascent,
    project_perturbation,
    symmetric_kl,
)

PAIRS = [("the dog runs", "a dog is running", 1), ("it rains today", "the sun shines", 0)] * 4


def model_and_rows(tmp_path, dtype=torch.float32):
    tok = bert_tokenizer(tmp_path / "vocab")
    cfg = bert_config(len(tok))
    cfg.hidden_dropout_prob = cfg.attention_probs_dropout_prob = 0.0
    cfg.num_labels = 2
    torch.manual_seed(0)
    model = BertForSequenceClassification(cfg).to(dtype)
    rows = [dict(tok(a, b), labels=y) for a, b, y in PAIRS]
    return model, tok, rows


def trainer(tmp_path, model, tok, rows, **kw):
    args = ClassificationTricksConfig(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, learning_rate=1e-3, max_steps=2,
        seed=0, use_cpu=True, **kw,
    )  # fmt: skip
    from transformers import DataCollatorWithPadding

    return ClassificationTrainer(
        model, args, train_dataset=rows, data_collator=DataCollatorWithPadding(tok), processing_class=tok
    )


def batch(tok, rows):
    from transformers import DataCollatorWithPadding

    return dict(DataCollatorWithPadding(tok)(rows[:4]))


def _loss_at(model, inputs, delta):
    rest = {k: v for k, v in inputs.items() if k not in ("input_ids", "labels")}
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    return F.cross_entropy(model(inputs_embeds=embeds + delta, **rest).logits, inputs["labels"])


def test_perturbation_helpers_by_hand():
    torch.manual_seed(0)
    embeds = torch.randn(2, 3, 4, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    d0 = initial_perturbation(embeds, mask, 0.3)
    assert (d0[0, 2] == 0).all()
    assert (d0[0].abs() <= 0.3 / math.sqrt(2 * 4) + 1e-15).all() and (
        d0[1].abs() <= 0.3 / math.sqrt(12) + 1e-15
    ).all()
    g = torch.randn(2, 3, 4, dtype=torch.float64)
    step = normalized_ascent(d0, g, 0.5)
    torch.testing.assert_close(step[1], d0[1] + 0.5 * g[1] / g[1].norm())
    big = torch.full((1, 2, 2), 3.0, dtype=torch.float64)  # norm 6
    torch.testing.assert_close(project_perturbation(big, 1.5), big / 4)
    assert torch.equal(project_perturbation(big, 0.0), big) and torch.equal(
        project_perturbation(big, 10.0), big
    )
    a, b = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    p, q = torch.softmax(a, -1), torch.softmax(b, -1)
    by_hand = ((q * (q.log() - p.log())).sum(-1) + (p * (p.log() - q.log())).sum(-1)).mean()
    assert math.isclose(float(symmetric_kl(a, b)), float(by_hand), rel_tol=1e-6)


def test_freelb_with_one_step_and_no_perturbation_is_plain_training(tmp_path):
    model_a, tok, rows = model_and_rows(tmp_path)
    trainer(tmp_path / "a", model_a, tok, rows).train()
    model_b, _, _ = model_and_rows(tmp_path)
    trainer(tmp_path / "b", model_b, tok, rows, adversarial="freelb", adv_steps=1, adv_init_mag=0.0).train()
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6 * max(1.0, float(a.abs().max())), msg=name)


def test_freelb_gradient_is_the_average_over_its_ascent_trajectory(tmp_path):
    model, tok, rows = model_and_rows(tmp_path, torch.float64)
    t = trainer(
        tmp_path, model, tok, rows, adversarial="freelb", adv_steps=2, adv_step_size=0.3, adv_init_mag=0.0
    )
    inputs = batch(tok, rows)
    model.zero_grad()
    t.training_step(model, inputs)
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    # By hand: delta0 = 0; delta1 = 0.3 g / |g| with g the loss's gradient at delta0; grads averaged.
    model.zero_grad()
    shape = (*inputs["input_ids"].shape, model.config.hidden_size)
    delta0 = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    (_loss_at(model, inputs, delta0) / 2).backward()
    delta1 = (0.3 * delta0.grad / delta0.grad.flatten(1).norm(dim=1).view(-1, 1, 1)).detach()
    (_loss_at(model, inputs, delta1) / 2).backward()
    for name, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(got[name], p.grad, rtol=1e-9, atol=1e-12, msg=name)


def test_smart_regulariser_equals_the_formula(tmp_path):
    model, tok, rows = model_and_rows(tmp_path, torch.float64)
    t = trainer(
        tmp_path,
        model,
        tok,
        rows,
        adversarial="smart",
        adv_step_size=1e-2,
        adv_init_mag=1e-3,
        smart_weight=2.0,
    )
    inputs = batch(tok, rows)
    model.train()
    torch.manual_seed(5)
    loss = t.compute_loss(model, inputs)
    # By hand, with the same noise draw.
    torch.manual_seed(5)
    rest = {k: v for k, v in inputs.items() if k not in ("input_ids", "labels")}
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    clean = model(inputs_embeds=embeds, **rest).logits
    noise = torch.randn_like(embeds) * 1e-3 * inputs["attention_mask"].unsqueeze(-1)
    delta = noise.clone().requires_grad_(True)
    kl = symmetric_kl(model(inputs_embeds=embeds.detach() + delta, **rest).logits, clean.detach())
    (grad,) = torch.autograd.grad(kl, delta)
    delta = noise + 1e-2 * grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1)
    adv = model(inputs_embeds=embeds + delta, **rest).logits
    expected = F.cross_entropy(clean, inputs["labels"]) + 2.0 * symmetric_kl(adv, clean)
    assert math.isclose(float(loss), float(expected), rel_tol=1e-9)
    assert t.last_components["smart"] > 0


def test_self_distillation_uses_an_ema_teacher_that_moves_each_step(tmp_path):
    model, tok, rows = model_and_rows(tmp_path, torch.float64)
    t = trainer(tmp_path, model, tok, rows, self_distillation_weight=0.5, self_distillation_momentum=0.9)
    start = {k: v.clone() for k, v in t.teacher.encoder.state_dict().items()}
    inputs = batch(tok, rows)
    model.train()
    loss = t.compute_loss(model, inputs)
    with torch.no_grad():
        p = F.log_softmax(model(**{k: v for k, v in inputs.items() if k != "labels"}).logits, -1)
    ce = F.cross_entropy(p, inputs["labels"])
    assert math.isclose(float(loss), float(ce), rel_tol=1e-9)  # teacher == model at the start: KL 0
    t.train()
    assert int(t.teacher.num_updates) == 2
    name = "classifier.weight"
    online = dict(model.named_parameters())[name].detach()
    assert not torch.equal(t.teacher.encoder.state_dict()[name], start[name])
    assert not torch.equal(t.teacher.encoder.state_dict()[name], online)


def test_metrics_and_bad_settings():
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    out = classification_metrics(EvalPrediction(predictions=logits, label_ids=np.array([1, 0, 0, 1])))
    assert out["accuracy"] == 0.5 and out["f1"] == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))
    with pytest.raises(ValueError, match="adversarial"):
        ClassificationTricksConfig(output_dir="x", adversarial="pgd")
    with pytest.raises(ValueError, match="adv_steps"):
        ClassificationTricksConfig(output_dir="x", adversarial="freelb", adv_steps=0)
