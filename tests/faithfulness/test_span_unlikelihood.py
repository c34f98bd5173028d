from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset

from faithfulness.helpers import INSTRUCTION, ROWS, tiny_causal_lm, word_tokenizer
from hf_contrastive.faithfulness.spans import UNFAITHFUL_MASK, SpanDataCollator, SpanFeatureBuilder
from hf_contrastive.faithfulness.trainer import (
    SpanUnlikelihoodConfig,
    SpanUnlikelihoodTrainer,
    safe_log1m_exp,
    span_objective,
)

FLOOR = math.log(1e-5)


def hand_loss(logp, labels, mask, objective, eps, n_items=None, floor=FLOOR, clamp=1e-5):
    """The paper's per-token formulas, token by token, in float64 python."""
    total, count = 0.0, 0
    for b in range(len(logp)):
        for t in range(len(logp[b])):
            if labels[b][t] == -100:
                continue
            count += 1
            lp = float(logp[b][t])
            if not mask[b][t]:
                total += -lp
            elif objective == "unlikelihood":
                total += -eps * math.log(max(1.0 - math.exp(lp), clamp))
            elif objective == "gradient_ascent":
                total += eps * max(lp, floor)
    return total / (n_items if n_items is not None else max(count, 1))


@pytest.mark.parametrize("objective", ["unlikelihood", "gradient_ascent", "nll"])
@pytest.mark.parametrize("n_items", [None, 17])
def test_span_objective_matches_hand_formula(objective, n_items):
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(3, 7, generator=g, dtype=torch.float64) * 4
    logp[0, 1] = -40.0  # below the ascent floor
    logp[1, 2] = -1e-9  # p -> 1
    labels = torch.randint(0, 5, (3, 7), generator=g)
    labels[:, :2] = -100
    labels[2, 5:] = -100  # padding
    mask = (torch.rand(3, 7, generator=g) > 0.6).long()
    mask[0, 1] = mask[1, 2] = 1
    mask[2, 6] = 1  # mask on a padded position must not count
    out = span_objective(logp, labels != -100, mask, objective, eps=0.7, num_items=n_items)
    want = hand_loss(logp.tolist(), labels.tolist(), mask.tolist(), objective, 0.7, n_items)
    assert out["loss"].item() == pytest.approx(want, rel=1e-6)
    if objective != "nll":
        assert (out["faithful_nll"] + 0.7 * out["span_term"]).item() == pytest.approx(want, rel=1e-6)


def test_log1m_exp_is_stable_when_p_tends_to_one():
    logp = torch.tensor([-1e-12, -1e-7, -1e-3, -0.5, -30.0], dtype=torch.float32, requires_grad=True)
    value = safe_log1m_exp(logp, clamp=1e-12)
    ref = torch.log(-torch.expm1(logp.detach().double()))
    assert torch.isfinite(value).all()
    # 1 - exp(-1e-7) would lose all digits in float32; expm1 keeps them.
    assert torch.allclose(value.double()[1:], ref[1:], rtol=1e-5)
    naive = torch.log(1 - torch.exp(logp.detach()))
    assert not torch.isfinite(naive[0])
    value.sum().backward()
    assert torch.isfinite(logp.grad).all()
    # clamped: 1 - p never below the clamp, so the loss stays bounded
    assert safe_log1m_exp(torch.tensor([0.0]), 1e-5).item() == pytest.approx(math.log(1e-5))
    loss = span_objective(
        torch.zeros(1, 2, requires_grad=True),
        torch.ones(1, 2, dtype=torch.bool),
        torch.ones(1, 2),
        "unlikelihood",
    )["loss"]
    assert torch.isfinite(loss)


def test_config_refuses_bad_values(tmp_path):
    with pytest.raises(ValueError, match="eps"):
        SpanUnlikelihoodConfig(output_dir=str(tmp_path), eps=-0.1, report_to="none")
    with pytest.raises(ValueError, match="objective"):
        SpanUnlikelihoodConfig(output_dir=str(tmp_path), objective="dpo", report_to="none")
    with pytest.raises(ValueError, match="packing"):
        SpanUnlikelihoodConfig(output_dir=str(tmp_path), packing=True, report_to="none")
    with pytest.raises(ValueError, match="padding_free"):
        SpanUnlikelihoodConfig(output_dir=str(tmp_path), padding_free=True, report_to="none")
    with pytest.raises(ValueError, match="span_weighting"):
        SpanUnlikelihoodConfig(output_dir=str(tmp_path), span_weighting="rank", report_to="none")
    with pytest.raises(ValueError, match="span_weight_max"):
        SpanUnlikelihoodConfig(output_dir=str(tmp_path), span_weight_max=0.0, report_to="none")
    with pytest.raises(ValueError, match="eps"):
        span_objective(torch.zeros(1, 1), torch.ones(1, 1, dtype=torch.bool), torch.ones(1, 1), eps=-1)


def _trainer(tmp_path, objective="unlikelihood", peft=False, **kw):
    tok = word_tokenizer()
    model = tiny_causal_lm(len(tok))
    args = SpanUnlikelihoodConfig(
        output_dir=str(tmp_path),
        objective=objective,
        eps=0.5,
        instruction=INSTRUCTION,
        max_length=64,
        per_device_train_batch_size=3,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        learning_rate=1e-2,
        **kw,
    )
    lora = None
    if peft:
        from peft import LoraConfig

        lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    return SpanUnlikelihoodTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(ROWS), processing_class=tok, peft_config=lora
    ), tok


@pytest.mark.parametrize("objective", ["unlikelihood", "gradient_ascent", "nll"])
@pytest.mark.parametrize("peft", [False, True])
def test_trainer_loss_equals_hand_formula_on_model_log_probs(tmp_path, objective, peft):
    trainer, tok = _trainer(tmp_path, objective, peft)
    builder = SpanFeatureBuilder(tok, max_length=64, instruction=INSTRUCTION)
    batch = SpanDataCollator(tok.pad_token_id)([builder(r) for r in ROWS])
    model = trainer.model
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()
    logp = torch.log_softmax(logits[:, :-1], -1)
    labels = batch["labels"][:, 1:]
    lp = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    mask = batch[UNFAITHFUL_MASK][:, 1:]
    for n_items in (None, 23):
        with torch.no_grad():
            got = trainer.compute_loss(model, dict(batch), num_items_in_batch=n_items)
        want = hand_loss(lp.tolist(), labels.tolist(), mask.tolist(), objective, 0.5, n_items)
        assert got.item() == pytest.approx(want, rel=1e-4)


def test_trainer_trains_logs_terms_and_keeps_the_mask_column(tmp_path):
    trainer, _ = _trainer(tmp_path, "unlikelihood", peft=True, max_steps=2)
    assert UNFAITHFUL_MASK in trainer.train_dataset.column_names
    batch = next(iter(trainer.get_train_dataloader()))
    assert UNFAITHFUL_MASK in batch and batch[UNFAITHFUL_MASK].sum() == 3  # "london" + "was" "not"
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss_span" in h]
    assert logged and {"loss_faithful_nll", "loss_span", "span_log_prob"} <= set(logged[0])


def test_unlikelihood_lowers_span_probability(tmp_path):
    trainer, tok = _trainer(tmp_path, "unlikelihood", max_steps=15)
    trainer.args.eps = 5.0
    builder = SpanFeatureBuilder(tok, max_length=64, instruction=INSTRUCTION)
    batch = SpanDataCollator(tok.pad_token_id)([builder(r) for r in ROWS])

    def span_lp():
        with torch.no_grad():
            logp = torch.log_softmax(trainer.model(input_ids=batch["input_ids"]).logits[:, :-1], -1)
        lp = logp.gather(-1, batch["labels"][:, 1:].clamp(min=0).unsqueeze(-1)).squeeze(-1)
        m = batch[UNFAITHFUL_MASK][:, 1:].bool()
        return lp[m].mean().item(), lp[~m & (batch["labels"][:, 1:] != -100)].mean().item()

    span0, faithful0 = span_lp()
    trainer.train()
    span1, faithful1 = span_lp()
    assert span1 < span0 - 0.5
    assert faithful1 > faithful0


def test_prebuilt_features_are_truncated_together(tmp_path):
    tok = word_tokenizer()
    builder = SpanFeatureBuilder(tok, max_length=None, instruction=INSTRUCTION)
    feats = Dataset.from_list([builder(r) for r in ROWS])
    args = SpanUnlikelihoodConfig(
        output_dir=str(tmp_path), max_length=12, truncation_mode="keep_end", report_to="none", use_cpu=True
    )
    trainer = SpanUnlikelihoodTrainer(
        model=tiny_causal_lm(len(tok)), args=args, train_dataset=feats, processing_class=tok
    )
    tails = {tuple(f["input_ids"][-12:]): f[UNFAITHFUL_MASK][-12:] for f in feats}
    assert len(trainer.train_dataset) == 3
    for row in trainer.train_dataset:
        assert len(row["input_ids"]) == len(row["labels"]) == len(row[UNFAITHFUL_MASK]) == 12
        assert row[UNFAITHFUL_MASK] == tails[tuple(row["input_ids"])]
    # keep_start at 8 tokens leaves prompts only: a clear error, not an empty run
    args = SpanUnlikelihoodConfig(output_dir=str(tmp_path), max_length=8, report_to="none", use_cpu=True)
    with pytest.raises(ValueError, match="no labelled tokens"):
        SpanUnlikelihoodTrainer(
            model=tiny_causal_lm(len(tok)), args=args, train_dataset=feats, processing_class=tok
        )


def test_default_collator_pads_the_mask_even_without_one_given(tmp_path):
    trainer, _ = _trainer(tmp_path)
    assert isinstance(trainer.data_collator, SpanDataCollator)
