"""Boundary errors of the relation wing: the processor's token budget capped at the backbone's limit."""

from __future__ import annotations

import pytest
from tiny_models import bert_config

from hf_contrastive.relation.configuration import RelationClassifierConfig
from hf_contrastive.relation.processing import RelationProcessor


def test_processor_budget_is_capped_at_the_backbone_limit(bert_tok):
    config = RelationClassifierConfig(backbone_config=bert_config(len(bert_tok)), max_seq_length=256)
    # Before: max_length 256 on a 64-position backbone (a size mismatch in torch on long sentences).
    with pytest.warns(UserWarning, match="max_seq_length=256 exceeds the backbone's limit of 64"):
        processor = RelationProcessor.from_config(bert_tok, config)
    assert processor.max_length == 64
