"""Replaced-token-detection pretraining (ELECTRA, Vega v1 phases 1 and 2) on tiny random BERTs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from tiny_models import bert_config, bert_tokenizer
from transformers import AutoModel, BertForMaskedLM, BertModel

from hf_contrastive.classification import RTDCollator, RTDConfig, RTDForPreTraining
from hf_contrastive.core.losses import UnsupervisedSimCSELoss

TEXTS = ["the dog runs in the park", "a cat sleeps on the sofa", "it rains today", "quick brown fox jumps"]


def build(tmp_path, gen_layers: int = 1, dropout: float = 0.0, **kw) -> tuple[RTDForPreTraining, object]:
    tok = bert_tokenizer(tmp_path / "vocab")
    torch.manual_seed(0)
    disc_cfg = bert_config(len(tok), layers=2)
    gen_cfg = bert_config(len(tok), layers=gen_layers)
    for cfg in (disc_cfg, gen_cfg):
        cfg.hidden_dropout_prob = cfg.attention_probs_dropout_prob = dropout
    model = RTDForPreTraining.from_encoders(BertForMaskedLM(gen_cfg), BertModel(disc_cfg), **kw)
    return model, tok


def test_towers_share_their_embeddings(tmp_path):
    model, _ = build(tmp_path)
    shared = model.discriminator.get_input_embeddings().weight
    assert model.generator.get_input_embeddings().weight is shared
    assert model.generator.get_output_embeddings().weight is shared
    assert model.generator.bert.embeddings is model.discriminator.embeddings  # positions and types too


def test_collator_masks_real_tokens_only_and_keeps_the_original(tmp_path):
    tok = bert_tokenizer(tmp_path / "vocab")
    batch = RTDCollator(tok, mask_probability=0.3, generator=torch.Generator().manual_seed(0))(TEXTS * 50)
    masked = batch["labels"] != -100
    special = torch.isin(batch["original_input_ids"], torch.tensor(tok.all_special_ids))
    assert not (masked & special).any() and not (masked & ~batch["attention_mask"].bool()).any()
    assert masked.any(dim=1).all()  # at least one per sentence
    assert torch.equal(batch["input_ids"][masked], torch.full((int(masked.sum()),), tok.mask_token_id))
    assert torch.equal(batch["labels"][masked], batch["original_input_ids"][masked])
    assert torch.equal(batch["input_ids"][~masked], batch["original_input_ids"][~masked])
    # The masking rate: a binomial count over the real tokens (plus the forced one per short sentence).
    real = (~special & batch["attention_mask"].bool()).sum().item()
    rate = masked.sum().item() / real
    assert abs(rate - 0.3) < 5 * math.sqrt(0.3 * 0.7 / real) + 200 / real


def test_loss_is_mlm_plus_weighted_detection_by_hand(tmp_path):
    model, tok = build(tmp_path, discriminator_weight=50.0)
    torch.manual_seed(1)
    batch = RTDCollator(tok, mask_probability=0.5)(TEXTS)
    out = model(**batch)
    real = batch["attention_mask"].bool()
    corrupted_differs = out.replaced
    assert not (corrupted_differs & (batch["labels"] == -100)).any()  # only masked positions can be replaced
    bce = F.binary_cross_entropy_with_logits(out.discriminator_logits[real], out.replaced[real].float())
    gen_logits = model.generator(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    mlm = F.cross_entropy(
        gen_logits.view(-1, gen_logits.shape[-1]), batch["labels"].view(-1), ignore_index=-100
    )
    assert math.isclose(float(out.rtd_loss), float(bce), rel_tol=1e-5)
    assert math.isclose(float(out.mlm_loss), float(mlm), rel_tol=1e-5)
    assert math.isclose(float(out.loss), float(mlm) + 50.0 * float(bce), rel_tol=1e-5)
    out.loss.backward()
    for part in (model.generator.cls, model.discriminator.encoder, model.discriminator_head):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    assert model.discriminator.get_input_embeddings().weight.grad.abs().sum() > 0


def test_phase_two_adds_the_simcse_term_on_the_unmasked_sentences(tmp_path):
    model, tok = build(tmp_path, sentence_contrast_weight=0.5, sentence_pooling="cls")
    torch.manual_seed(1)
    batch = RTDCollator(tok, mask_probability=0.5)(TEXTS)
    torch.manual_seed(2)
    out = model(**batch)
    # No dropout here, so both views are the same: the term is InfoNCE of identical views, by the library's loss.
    cls = model.discriminator(
        input_ids=batch["original_input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state[:, 0]
    expected = UnsupervisedSimCSELoss(temperature=0.05)(cls, cls).loss
    assert math.isclose(float(out.sentence_contrast_loss), float(expected), rel_tol=1e-5)
    assert math.isclose(
        float(out.loss), float(out.mlm_loss) + 50 * float(out.rtd_loss) + 0.5 * float(expected), rel_tol=1e-5
    )


def test_save_and_reload_round_trip(tmp_path):
    model, tok = build(tmp_path)
    model.save_pretrained(tmp_path / "rtd")
    loaded = AutoModel.from_pretrained(tmp_path / "rtd")
    assert isinstance(loaded, RTDForPreTraining)
    assert (
        loaded.generator.get_input_embeddings().weight is loaded.discriminator.get_input_embeddings().weight
    )
    batch = RTDCollator(tok)(TEXTS)
    with torch.no_grad():
        a = model.eval()(input_ids=batch["original_input_ids"], attention_mask=batch["attention_mask"])
        b = loaded.eval()(input_ids=batch["original_input_ids"], attention_mask=batch["attention_mask"])
    torch.testing.assert_close(a.discriminator_logits, b.discriminator_logits)
    model.discriminator.save_pretrained(tmp_path / "encoder")  # the encoder kept for fine-tuning
    assert isinstance(AutoModel.from_pretrained(tmp_path / "encoder"), BertModel)


def test_bad_settings_are_refused_or_warned(tmp_path):
    with pytest.warns(UserWarning, match="more parameters"):
        build(tmp_path, gen_layers=4)
    tok = bert_tokenizer(tmp_path / "vocab")
    small = bert_config(len(tok))
    small.hidden_size, small.intermediate_size = 16, 24
    with pytest.raises(ValueError, match="share them"):
        RTDForPreTraining.from_encoders(BertForMaskedLM(small), BertModel(bert_config(len(tok))))
    with pytest.raises(ValueError, match="mask_probability"):
        RTDConfig(mask_probability=0.0)
    with pytest.raises(ValueError, match="sentence_pooling"):
        RTDConfig(sentence_pooling="max")
