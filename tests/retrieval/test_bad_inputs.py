"""Inputs that used to give silently wrong results in the retrieval wing.

NaN or all-zero embeddings scored nDCG@10 = 1.0 (every score tied and the id tie-break happened to rank the
relevant document first), `rerank(top_k=-1)` dropped the last document, and an empty training set ran 0 steps.
"""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from tiny_models import bert_config, bert_tokenizer

from hf_contrastive.retrieval.evaluation import evaluate_retrieval
from hf_contrastive.retrieval.rerankers import (
    CrossEncoderReranker,
    CrossEncoderRerankerConfig,
    RerankerConfig,
    RerankerTrainer,
)

# The relevant document has the smallest id, so an all-tied ranking puts it first.
CORPUS = {"d1": "dog runs in park", "d2": "red car", "d3": "cat sleeps on sofa"}
QUERIES = {"q1": "dog", "q2": "cat"}
QRELS = {"q1": {"d1": 1}, "q2": {"d1": 1}}


class RowEncoder:
    """`encode` giving each text a fixed row; `overrides` replaces some texts' rows."""

    def __init__(self, overrides: dict[str, list[float]] | None = None) -> None:
        self.overrides = overrides or {}

    def encode(self, texts, batch_size=32, **kwargs):
        rows = []
        for t in texts:
            base = [1.0, float(len(t)), 0.5]
            rows.append(self.overrides.get(t, base))
        return torch.tensor(rows)


def test_nan_embeddings_raise_naming_rows_and_ids():
    model = RowEncoder({"red car": [float("nan")] * 3})
    with pytest.raises(
        ValueError, match=r"NaN or infinite embeddings for 1 of 3 documents: row 1 \(id 'd2'\)"
    ):
        evaluate_retrieval(model, CORPUS, QUERIES, QRELS)


def test_all_nan_model_does_not_score_a_perfect_ndcg():
    class AllNaN:
        def encode(self, texts, batch_size=32, **kwargs):
            return torch.full((len(texts), 4), float("nan"))

    with pytest.raises(ValueError, match=r"2 of 2 queries: row 0 \(id 'q1'\), row 1 \(id 'q2'\)"):
        evaluate_retrieval(AllNaN(), CORPUS, QUERIES, QRELS)


def test_all_zero_embeddings_raise_under_cosine():
    class Zeros:
        def encode(self, texts, batch_size=32, **kwargs):
            return torch.zeros(len(texts), 4)

    with pytest.raises(ValueError, match="all-zero embeddings"):
        evaluate_retrieval(Zeros(), CORPUS, QUERIES, QRELS)
    zeros_one = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match=r"all-zero embeddings for 1 of 3 documents: row 2 \(id 'd3'\)"):
        evaluate_retrieval(
            RowEncoder({"dog": [1.0, 0.0], "cat": [0.0, 1.0]}),
            CORPUS,
            QUERIES,
            QRELS,
            corpus_embeddings=zeros_one,
        )


def test_zero_rows_are_a_defined_dot_product_score():
    model = RowEncoder({"dog": [1.0, 0.0], "cat": [0.0, 1.0]})
    corpus_embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    out = evaluate_retrieval(
        model, CORPUS, QUERIES, QRELS, corpus_embeddings=corpus_embeddings, score_function="dot"
    )
    assert out["accuracy@1"] == 0.5  # q1 finds d1 first, q2 finds d2 first


# -- rerankers ------------------------------------------------------------------------------------------------


def _cross_encoder(tmp_path) -> CrossEncoderReranker:
    tok = bert_tokenizer(tmp_path / "vocab")
    torch.manual_seed(0)
    model = CrossEncoderReranker(
        CrossEncoderRerankerConfig(backbone_config=bert_config(len(tok)).to_dict(), max_seq_length=48)
    )
    model.tokenizer = tok
    return model.eval()


@pytest.mark.parametrize("top_k", [-1, 0, 1.5, True])
def test_rerank_refuses_a_non_positive_top_k(tmp_path, top_k):
    model = _cross_encoder(tmp_path)
    with pytest.raises(ValueError, match="top_k must be an int >= 1"):
        model.rerank("dog", ["dog runs", "red car", "cat sleeps"], top_k=top_k)


def test_rerank_top_k_none_keeps_every_document_and_k_keeps_k(tmp_path):
    model = _cross_encoder(tmp_path)
    docs = ["dog runs", "red car", "cat sleeps"]
    assert sorted(r["corpus_id"] for r in model.rerank("dog", docs)) == [0, 1, 2]
    assert len(model.rerank("dog", docs, top_k=2)) == 2


def test_reranker_trainer_refuses_an_empty_dataset(tmp_path):
    empty = Dataset.from_dict({"anchor": [], "positive": [], "negative_1": []})
    args = RerankerConfig(output_dir=str(tmp_path / "o"), max_steps=1, report_to="none", save_strategy="no")
    with pytest.raises(ValueError, match="RerankerTrainer got an empty train_dataset"):
        RerankerTrainer(model=_cross_encoder(tmp_path), args=args, train_dataset=empty)
