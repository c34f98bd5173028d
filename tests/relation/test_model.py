"""RelationClassifier: head logits vs a manual computation, save/load, tokenizer markers, Auto classes, card."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer

from hf_contrastive.relation.configuration import RelationClassifierConfig
from hf_contrastive.relation.modeling import RelationClassifier

from .helpers import LABELS, examples, tiny_classifier


def test_logits_match_manual_head(tmp_path):
    model = tiny_classifier(tmp_path).eval()
    batch = model.collator()(examples())
    out = model(**batch)
    with torch.no_grad():
        states = model.backbone(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
        ).last_hidden_state
        rows = torch.arange(states.shape[0])
        pos = batch["entity_positions"]
        x = torch.cat([states[rows, pos[:, 0]], states[rows, pos[:, 2]]], dim=-1)
        head = model.classifier
        manual = (
            torch.relu(x @ head.dense.weight.T + head.dense.bias) @ head.out_proj.weight.T
            + head.out_proj.bias
        )
    torch.testing.assert_close(out.logits, manual)
    assert out.logits.shape == (6, len(LABELS))
    # Marker positions found from the ids give the same logits.
    no_pos = {k: v for k, v in batch.items() if k not in ("entity_positions", "labels")}
    torch.testing.assert_close(model(**no_pos).logits, out.logits)
    loss = model(**batch).loss
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(manual, batch["labels"]))


def test_save_load_round_trip(tmp_path):
    model = tiny_classifier(tmp_path).eval()
    batch = model.collator()(examples())
    expected = model(**batch).logits
    model.save_pretrained(tmp_path / "saved")
    files = {p.name for p in (tmp_path / "saved").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= files
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".saved.tmp")]
    again = RelationClassifier.from_pretrained(tmp_path / "saved").eval()
    torch.testing.assert_close(again(**again.collator()(examples())).logits, expected)
    cfg = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert cfg["model_type"] == "contrastive_relation_classifier"
    assert cfg["id2label"] == {str(i): lab for i, lab in enumerate(LABELS)}
    assert cfg["marker_scheme"] == "typed_entity_marker"
    # The tokenizer keeps its markers as single tokens with the ids the config records.
    tok = AutoTokenizer.from_pretrained(tmp_path / "saved")
    for marker, idx in again.config.marker_token_ids.items():
        assert tok.tokenize(f"dog {marker} cat") == ["dog", marker, "cat"]
        assert tok.convert_tokens_to_ids(marker) == idx
    # Plain transformers Auto classes rebuild it (attention implementation set on the backbone).
    auto = AutoModel.from_pretrained(tmp_path / "saved").eval()
    assert isinstance(auto, RelationClassifier)
    assert auto.backbone.config._attn_implementation is not None
    torch.testing.assert_close(auto(**batch).logits, expected)
    assert isinstance(AutoConfig.from_pretrained(tmp_path / "saved"), RelationClassifierConfig)
    card = (tmp_path / "saved" / "README.md").read_text()
    assert "relation-extraction" in card and "Cause-Effect(e1,e2)" in card and "typed_entity_marker" in card
    assert again.predict(examples()[:2]) == [LABELS[i] for i in expected[:2].argmax(-1).tolist()]


def test_push_to_hub_uploads_card(tmp_path, monkeypatch):
    model = tiny_classifier(tmp_path)
    seen = {}

    def fake_push(folder, repo_id, **kwargs):
        from pathlib import Path

        seen["files"] = sorted(p.name for p in Path(folder).iterdir())
        seen["card"] = (Path(folder) / "README.md").read_text()
        seen["repo"] = repo_id

    monkeypatch.setattr("hf_contrastive.core.hub.push.push_folder_to_hub", fake_push)
    model.push_to_hub("me/tiny-re")
    assert seen["repo"] == "me/tiny-re"
    assert "README.md" in seen["files"] and "tokenizer.json" in seen["files"]
    assert 'from_pretrained("me/tiny-re")' in seen["card"]


def test_punct_scheme_adds_no_tokens(tmp_path):
    model = tiny_classifier(tmp_path, scheme="typed_entity_marker_punct")
    assert model.config.marker_token_ids == {}
    with pytest.raises(ValueError, match="pass entity_positions"):
        model(input_ids=torch.ones(1, 4, dtype=torch.long))


def test_bad_input(tmp_path):
    model = tiny_classifier(tmp_path)
    with pytest.raises(ValueError, match="no subject marker"):
        model(input_ids=torch.ones(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        model(
            input_ids=torch.ones(1, 4, dtype=torch.long), entity_positions=torch.zeros(1, 3, dtype=torch.long)
        )
    with pytest.raises(ValueError, match="marker_scheme"):
        RelationClassifierConfig(marker_scheme="brackets")
    with pytest.raises(ValueError, match="not one of the labels"):
        RelationClassifierConfig(id2label={0: "a"}, label2id={"a": 0}, no_relation_label="Other")
    with pytest.raises(ValueError, match="not in the schema"):
        model.collator()([{"tokens": ["a", "b"], "subject": [0, 1], "object": [1, 2], "label": "Friend-Of"}])
    with pytest.raises(ValueError, match="pass labels"):
        RelationClassifier.from_pretrained(tmp_path / "vocab")
