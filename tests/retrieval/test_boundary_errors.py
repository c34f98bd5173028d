"""Boundary errors of the retrieval wing: reranker pairs truncated at the backbone's position limit."""

from __future__ import annotations

import pytest
from tiny_models import bert_config

from hf_contrastive.retrieval.rerankers.configuration import CrossEncoderRerankerConfig
from hf_contrastive.retrieval.rerankers.modeling import CrossEncoderReranker

LONG = "a man is eating food . " * 40


def test_cross_encoder_pairs_are_cut_to_the_backbone_limit(bert_tok):
    config = CrossEncoderRerankerConfig(
        backbone_config=bert_config(len(bert_tok)).to_dict(), max_seq_length=512
    )
    model = CrossEncoderReranker(config).eval()
    model.tokenizer = bert_tok
    # Before: 512-token pairs reached the 64-position backbone (a size mismatch in torch).
    with pytest.warns(UserWarning, match="max_seq_length=512 exceeds the backbone's limit of 64"):
        feats = model.tokenize_pairs(["a dog runs"], [LONG])
    assert feats["input_ids"].shape[1] == 64
    assert model.predict([("a dog runs", LONG)]).shape == (1,)
