"""Tiny relation examples and models for the relation tests."""

from __future__ import annotations

import torch
from tiny_models import bert_config, bert_tokenizer

from hf_contrastive.relation.data import RelationExample
from hf_contrastive.relation.modeling import RelationClassifier

LABELS = ["Cause-Effect(e1,e2)", "Cause-Effect(e2,e1)", "Other"]


def examples() -> list[RelationExample]:
    rows = [
        ("the dog runs in the big green park".split(), (1, 2), (5, 7), "Cause-Effect(e1,e2)"),
        ("a cat sleeps on sofa".split(), (1, 2), (4, 5), "Cause-Effect(e2,e1)"),
        ("the woman plays guitar today".split(), (1, 2), (3, 4), "Other"),
        ("quick brown fox jumps over lazy dog".split(), (2, 3), (5, 7), "Cause-Effect(e1,e2)"),
        ("it rains today".split(), (0, 1), (1, 2), "Other"),
        ("music loud car drives fast".split(), (0, 1), (2, 3), "Cause-Effect(e2,e1)"),
    ]
    return [RelationExample(t, s, o, label=lab, id=str(i)) for i, (t, s, o, lab) in enumerate(rows)]


def tiny_classifier(tmp_path, scheme: str = "typed_entity_marker", seed: int = 0) -> RelationClassifier:
    from transformers import BertModel

    tok = bert_tokenizer(tmp_path / "vocab")
    torch.manual_seed(seed)
    backbone = BertModel(bert_config(len(tok)), add_pooling_layer=False)
    return RelationClassifier.from_backbone(
        backbone, LABELS, tokenizer=tok, marker_scheme=scheme, no_relation_label="Other"
    )
