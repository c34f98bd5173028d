"""Cards of the relation artefacts (the classifier head and the TKRE-pretrained encoder): metadata, snippets
that run against the saved folder and match the in-memory model, atomic saves, pushes of the model's files."""

from __future__ import annotations

import pytest
import torch
from card_checks import (
    check_card,
    check_failed_save_keeps_previous,
    check_push_uploads_model_files_only,
    run_snippets,
)
from peft import LoraConfig
from tiny_models import bert_config, bert_tokenizer
from transformers import BertForMaskedLM

from hf_contrastive.core.hub.card import ModelCardInfo
from hf_contrastive.relation.modeling import RelationClassifier, render_relation_card
from hf_contrastive.relation.tkre import TKREConfig, TKREPretrainer

from .helpers import LABELS, examples, tiny_classifier

WEIGHT_WRITER = "transformers.modeling_utils.safe_save_file"


@pytest.mark.parametrize("scheme", ["typed_entity_marker", "entity_marker", "typed_entity_marker_punct"])
def test_classifier_card_and_snippets(tmp_path, scheme):
    model = tiny_classifier(tmp_path, scheme=scheme).eval()
    model.card_info.base_model = "org/tiny-bert"
    folder = tmp_path / "re"
    model.save_pretrained(folder)
    card = check_card(folder, "org/tiny-bert", "text-classification")
    assert "relation-extraction" in card.data.tags and "zhou-chen-2022-improved" in card.text
    namespaces = run_snippets(folder)
    # The plain-transformers snippet finds markers by token id: only schemes with marker tokens show it.
    assert len(namespaces) == (1 if scheme == "typed_entity_marker_punct" else 2)
    ours = namespaces[0]
    labels, probs = model.predict(ours["examples"], return_scores=True)
    assert ours["labels"] == labels
    torch.testing.assert_close(ours["probabilities"], probs)
    if len(namespaces) == 2:
        plain = namespaces[1]
        # The marked text gives the same logits as the classifier's own collator on the same example.
        batch = model.collator(with_labels=False)(ours["examples"])
        with torch.no_grad():
            torch.testing.assert_close(plain["logits"], model(**batch).logits)


def test_render_relation_card_is_the_shared_renderer(tmp_path):
    model = tiny_classifier(tmp_path)
    card = render_relation_card(model, repo_id="me/re")
    assert 'RelationClassifier.from_pretrained("me/re")' in card.text
    assert card.text == model.model_card(repo_id="me/re").text


def test_classifier_failed_save_is_atomic(tmp_path, monkeypatch):
    model = tiny_classifier(tmp_path)
    check_failed_save_keeps_previous(model.save_pretrained, tmp_path / "re", monkeypatch, WEIGHT_WRITER)


def test_classifier_push(tmp_path, hub):
    model = tiny_classifier(tmp_path)
    expected = {"README.md", "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    if getattr(model, "processor", None) is not None:  # the entity-marker processor saves its settings
        expected.add("processor_config.json")
    check_push_uploads_model_files_only(
        lambda **kw: model.push_to_hub("me/re", **kw), hub, tmp_path, expected
    )


def _pretrainer(tmp_path, lora: bool = False) -> TKREPretrainer:
    tok = bert_tokenizer(tmp_path / "vocab")
    torch.manual_seed(0)
    mlm = BertForMaskedLM(bert_config(len(tok)))
    args = TKREConfig(output_dir=str(tmp_path / "out"), disable_tqdm=True, use_cpu=True, stage1_epochs=1)
    return TKREPretrainer(
        mlm,
        args=args,
        stage1_dataset=examples(),
        stage2_dataset=examples(),
        relations=LABELS,
        processing_class=tok,
        peft_config=LoraConfig(r=4, target_modules=["query", "value"]) if lora else None,
    )


@pytest.mark.parametrize("lora", [False, True])
def test_tkre_encoder_card_and_snippets(tmp_path, lora):
    trainer = _pretrainer(tmp_path, lora)
    folder = tmp_path / "encoder"
    trainer.save_encoder(folder, card_info=ModelCardInfo(base_model="org/tiny-bert", license="mit"))
    card = check_card(folder, "org/tiny-bert", "feature-extraction")
    assert {"tkre", "relation-extraction"} <= set(card.data.tags) and card.data.license == "mit"
    assert "guo2025tkre" in card.text and "stage 2 (MSLM + SCL)" in card.text
    assert ("LoRA (merged" in card.text) == lora
    encoder, tokenizer = trainer.export_encoder()
    encoder.eval()
    states, classifier = run_snippets(folder)
    batch = tokenizer(states["texts"], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(states["hidden_states"], encoder(**batch).last_hidden_state)
    assert isinstance(classifier["classifier"], RelationClassifier)


def test_tkre_encoder_failed_save_is_atomic(tmp_path, monkeypatch):
    trainer = _pretrainer(tmp_path)
    check_failed_save_keeps_previous(trainer.save_encoder, tmp_path / "encoder", monkeypatch, WEIGHT_WRITER)
