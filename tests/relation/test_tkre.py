"""TKRE: span contrastive loss vs the formula, span helpers, two-stage pretraining and fine-tuning on tiny models."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_models import bert_config, bert_tokenizer
from transformers import BertForMaskedLM

from hf_contrastive.relation.modeling import RelationClassifier
from hf_contrastive.relation.tkre import (
    RelationClassificationTrainer,
    RelationFinetuneConfig,
    SpanContrastiveLoss,
    TKREConfig,
    TKREPretrainer,
    relation_span_bounds,
    sample_negative_spans,
    span_mean,
)

from .helpers import LABELS, examples, tiny_classifier


def test_span_contrastive_loss_matches_formula():
    torch.manual_seed(0)
    anchors, pos, neg = torch.randn(3, 8), torch.randn(4, 8), torch.randn(4, 8)
    labels = torch.tensor([0, 2, 1, 2])
    tau = 0.1
    out = SpanContrastiveLoss(temperature=tau)(anchors, pos, neg, labels)

    def cos(a, b):
        return float(a @ b / (a.norm() * b.norm()))

    expected = []
    for i in range(4):
        a = anchors[labels[i]]
        sp, sn = cos(a, pos[i]) / tau, cos(a, neg[i]) / tau
        expected.append(-math.log(math.exp(sp) / (math.exp(sp) + math.exp(sn))))
    assert out.loss.item() == pytest.approx(sum(expected) / 4, rel=1e-5)
    # Rows without a negative are left out of the mean.
    valid = torch.tensor([True, False, True, False])
    out = SpanContrastiveLoss(temperature=tau)(anchors, pos, neg, labels, valid)
    assert out.loss.item() == pytest.approx((expected[0] + expected[2]) / 2, rel=1e-5)
    # With the other anchors in the denominator.
    out = SpanContrastiveLoss(temperature=tau, anchor_negatives=True)(anchors, pos, neg, labels)
    expected = []
    for i in range(4):
        a = anchors[labels[i]]
        terms = [cos(a, pos[i]) / tau, cos(a, neg[i]) / tau]
        terms += [cos(anchors[r], pos[i]) / tau for r in range(3) if r != labels[i]]
        expected.append(-(terms[0] - math.log(sum(math.exp(t) for t in terms))))
    assert out.loss.item() == pytest.approx(sum(expected) / 4, rel=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        SpanContrastiveLoss(temperature=0)
    with pytest.raises(ValueError, match="relation indices"):
        SpanContrastiveLoss()(anchors, pos, neg, torch.tensor([0, 1, 2, 3]))


def test_span_helpers():
    # [CLS] w [S] e [/S] b1 b2 [O] o [/O] w2 w3 w4 [SEP]
    pos = torch.tensor([[2, 4, 7, 9], [7, 9, 2, 4], [2, 4, 5, 7]])
    start, end = relation_span_bounds(pos)
    assert start.tolist() == [5, 5, 2] and end.tolist() == [7, 7, 8]  # adjacent entities: whole stretch
    h = torch.arange(3 * 14 * 2, dtype=torch.float).view(3, 14, 2)
    means = span_mean(h, start, end)
    torch.testing.assert_close(means[0], h[0, 5:7].mean(0))
    torch.testing.assert_close(means[2], h[2, 2:8].mean(0))
    ids = torch.full((3, 14), 7)
    ids[:, 0], ids[:, 13] = 101, 102
    mask = torch.ones(3, 14, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        s, e, valid = sample_negative_spans(ids, mask, pos, torch.tensor([101, 102]), max_span=3, generator=g)
        assert valid.all()
        for i in range(3):
            span = set(range(int(s[i]), int(e[i])))
            assert 1 <= len(span) <= 3
            p = pos[i].tolist()
            assert not span & (set(range(p[0], p[1] + 1)) | set(range(p[2], p[3] + 1)) | {0, 13})
            if i < 2:
                assert not span & {5, 6}  # outside the relation span when possible
    s, e, valid = sample_negative_spans(
        ids[:, :5], mask[:, :5], torch.tensor([[1, 2, 3, 4]] * 3), torch.tensor([101, 102])
    )
    assert not valid.any()


def test_two_stage_pretraining_then_finetune(tmp_path):
    tok = bert_tokenizer(tmp_path / "vocab")
    torch.manual_seed(0)
    mlm = BertForMaskedLM(bert_config(len(tok)))
    args = TKREConfig(
        output_dir=str(tmp_path / "out"),
        stage1_epochs=1,
        stage2_epochs=2,
        per_device_train_batch_size=3,
        learning_rate=1e-3,
        logging_steps=1,
        disable_tqdm=True,
        use_cpu=True,
    )
    trainer = TKREPretrainer(
        mlm,
        args=args,
        stage1_dataset=examples(),
        stage2_dataset=examples(),
        relations=LABELS,
        processing_class=tok,
    )
    before = trainer.model.encoder.encoder.layer[0].attention.self.query.weight.detach().clone()
    anchors_before = trainer.model.anchors.detach().clone()
    out = trainer.train()
    assert "stage1_loss" in out.metrics
    logged = [r for r in trainer.state.log_history if "scl" in r]
    assert logged and all(r["stage"] == 2 for r in logged)  # stage 2 logged SCL, after stage 1
    assert not torch.equal(trainer.model.anchors.detach(), anchors_before)
    encoder, tokenizer = trainer.export_encoder()
    assert not torch.equal(encoder.encoder.layer[0].attention.self.query.weight, before)
    trainer.save_encoder(tmp_path / "encoder")
    clf = RelationClassifier.from_pretrained(tmp_path / "encoder", labels=LABELS, no_relation_label="Other")
    # The pretrained markers keep their ids: nothing is added a second time.
    assert len(clf.tokenizer) == len(tokenizer)
    torch.testing.assert_close(
        clf.backbone.encoder.layer[0].attention.self.query.weight,
        encoder.encoder.layer[0].attention.self.query.weight,
    )
    with pytest.raises(ValueError, match="not in the relation schema"):
        TKREPretrainer(mlm, args=args, stage2_dataset=examples(), relations=["Other"], processing_class=tok)


def test_finetune_trainer_learns_and_evaluates(tmp_path):
    model = tiny_classifier(tmp_path)
    data = examples() * 4
    args = RelationFinetuneConfig(
        output_dir=str(tmp_path / "ft"),
        num_train_epochs=8,
        learning_rate=3e-3,
        per_device_train_batch_size=8,
        disable_tqdm=True,
        use_cpu=True,
    )
    trainer = RelationClassificationTrainer(
        model=model, args=args, train_dataset=data, eval_dataset=examples()
    )
    first = trainer.evaluate()
    trainer.train()
    last = trainer.evaluate()
    assert last["eval_loss"] < first["eval_loss"]
    assert last["eval_accuracy"] == 1.0
    assert "eval_official_macro_f1" in last and "eval_micro_f1" in last


def test_finetune_with_lora(tmp_path):
    from peft import LoraConfig

    model = tiny_classifier(tmp_path)
    marker_ids = list(model.config.marker_token_ids.values())
    emb_before = model.get_input_embeddings().weight.detach().clone()
    args = RelationFinetuneConfig(
        output_dir=str(tmp_path / "ft"),
        max_steps=3,
        learning_rate=1e-2,
        per_device_train_batch_size=6,
        disable_tqdm=True,
        use_cpu=True,
    )
    trainer = RelationClassificationTrainer(
        model=model,
        args=args,
        train_dataset=examples(),
        peft_config=LoraConfig(r=4, target_modules=["query", "value"]),
    )
    trainer.train()
    merged = trainer.classifier()
    assert isinstance(merged, RelationClassifier)
    emb = merged.get_input_embeddings().weight.detach()
    assert not torch.equal(emb[marker_ids], emb_before[marker_ids])  # markers trained
    others = [i for i in range(emb.shape[0]) if i not in marker_ids]
    torch.testing.assert_close(emb[others], emb_before[others])  # the rest frozen
    merged.save_pretrained(tmp_path / "merged")
    assert RelationClassifier.from_pretrained(tmp_path / "merged").config.num_labels == 3


def test_pretraining_with_lora_merges(tmp_path):
    from peft import LoraConfig

    tok = bert_tokenizer(tmp_path / "vocab")
    torch.manual_seed(0)
    mlm = BertForMaskedLM(bert_config(len(tok)))
    ffn_before = mlm.bert.encoder.layer[0].intermediate.dense.weight.detach().clone()
    query_before = mlm.bert.encoder.layer[0].attention.self.query.weight.detach().clone()
    args = TKREConfig(
        output_dir=str(tmp_path / "out"),
        stage1_epochs=1,
        stage2_epochs=1,
        per_device_train_batch_size=3,
        learning_rate=1e-2,
        disable_tqdm=True,
        use_cpu=True,
    )
    trainer = TKREPretrainer(
        mlm,
        args=args,
        stage1_dataset=examples(),
        stage2_dataset=examples(),
        relations=LABELS,
        processing_class=tok,
        peft_config=LoraConfig(r=4, target_modules=["query", "value"]),
    )
    trainer.train()
    encoder, _ = trainer.export_encoder()
    assert type(encoder).__name__ == "BertModel"
    assert not any("lora" in name for name, _ in encoder.named_parameters())
    torch.testing.assert_close(encoder.encoder.layer[0].intermediate.dense.weight, ffn_before)  # frozen
    assert not torch.equal(encoder.encoder.layer[0].attention.self.query.weight, query_before)  # LoRA merged


def _pretrainer(tmp_path, tied: bool = False, **config) -> TKREPretrainer:
    tok = bert_tokenizer(tmp_path / "vocab")
    torch.manual_seed(0)
    cfg = bert_config(len(tok))
    cfg.tie_word_embeddings = tied
    args = TKREConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=3,
        learning_rate=1e-2,
        disable_tqdm=True,
        use_cpu=True,
        **config,
    )
    return TKREPretrainer(
        BertForMaskedLM(cfg),
        args=args,
        stage1_dataset=examples(),
        stage2_dataset=examples(),
        relations=LABELS,
        processing_class=tok,
    )


@pytest.mark.parametrize("tied", [False, True])
def test_mlm_head_warmup_trains_the_head_alone(tmp_path, tied):
    trainer = _pretrainer(tmp_path, tied=tied, mlm_head_warmup_steps=5, stage1_epochs=0, stage2_epochs=0)
    model = trainer.model
    head = model.mlm_head()
    assert (head.predictions.decoder.weight is model.encoder.get_input_embeddings().weight) == tied
    encoder_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    transform_before = head.predictions.transform.dense.weight.detach().clone()
    grads_before = {n: p.requires_grad for n, p in model.named_parameters()}
    losses = trainer.warm_up_mlm_head()
    assert len(losses) == 5 and all(math.isfinite(x) for x in losses)
    for k, v in model.encoder.state_dict().items():  # encoder (and a tied decoder) untouched
        assert torch.equal(v, encoder_before[k]), k
    assert not torch.equal(head.predictions.transform.dense.weight, transform_before)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads_before
    with pytest.raises(ValueError, match="mlm_head_warmup_steps"):
        TKREConfig(output_dir=str(tmp_path), mlm_head_warmup_steps=-1)


def test_encoder_learning_rate_and_frozen_layers(tmp_path):
    # Encoder at learning rate 0: only the head, projection and anchors move.
    trainer = _pretrainer(
        tmp_path, mlm_head_warmup_steps=0, stage1_epochs=1, stage2_epochs=1, encoder_learning_rate=0.0
    )
    before = {k: v.clone() for k, v in trainer.model.encoder.state_dict().items()}
    anchors = trainer.model.anchors.detach().clone()
    trainer.train()
    for k, v in trainer.model.encoder.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not torch.equal(trainer.model.anchors.detach(), anchors)
    encoder_ids = {id(p) for p in trainer.model.encoder.parameters()}
    for g in trainer.optimizer.param_groups:  # the schedule's starting rates
        inside = {id(p) in encoder_ids for p in g["params"]}
        assert len(inside) == 1 and g["initial_lr"] == (0.0 if inside.pop() else 1e-2)
    # freeze_layers=1: embeddings and layer 0 fixed, layer 1 trains.
    trainer = _pretrainer(
        tmp_path, mlm_head_warmup_steps=0, stage1_epochs=1, stage2_epochs=0, freeze_layers=1
    )
    enc = trainer.model.encoder
    emb, l0, l1 = (m.state_dict() for m in (enc.embeddings, enc.encoder.layer[0], enc.encoder.layer[1]))
    emb, l0, l1 = ({k: v.clone() for k, v in d.items()} for d in (emb, l0, l1))
    trainer.train()
    assert all(torch.equal(v, emb[k]) for k, v in enc.embeddings.state_dict().items())
    assert all(torch.equal(v, l0[k]) for k, v in enc.encoder.layer[0].state_dict().items())
    assert not all(torch.equal(v, l1[k]) for k, v in enc.encoder.layer[1].state_dict().items())
    with pytest.raises(ValueError, match="freeze_layers must be between"):
        _pretrainer(tmp_path, freeze_layers=99)
    with pytest.raises(ValueError, match="encoder_learning_rate"):
        TKREConfig(output_dir=str(tmp_path), encoder_learning_rate=-1.0)
