"""Column roles, the one-call collator and the no-duplicates batch sampler."""

from __future__ import annotations

import pytest
import torch
from tiny_models import bert_tokenizer

from hf_contrastive.core.data.collator import ContrastiveDataCollator
from hf_contrastive.core.data.columns import resolve_column_roles
from hf_contrastive.core.data.samplers import NoDuplicatesBatchSampler


@pytest.mark.parametrize(
    ("columns", "layout", "negatives"),
    [
        (["text"], "unsupervised", []),
        (["anchor", "positive"], "pairs", []),
        (["premise", "entailment", "contradiction"], "pairs", ["contradiction"]),
        (["query", "positive", "negative_1", "negative_2"], "pairs", ["negative_1", "negative_2"]),
        (["sentence1", "sentence2", "score"], "scored_pairs", []),
        (["anchor_input_ids", "anchor_attention_mask"], "unsupervised", []),
    ],
)
def test_role_detection(columns, layout, negatives):
    roles = resolve_column_roles(columns)
    assert roles.layout == layout
    assert roles.negatives == negatives


def test_role_errors_name_what_was_found():
    with pytest.raises(ValueError, match=r"no positive column.*Columns: \['anchor', 'negative'\]"):
        resolve_column_roles(["anchor", "negative"])
    with pytest.raises(ValueError, match="Could not tell which column is the anchor"):
        resolve_column_roles(["foo", "bar"])
    with pytest.raises(ValueError, match="positive_column='answer' is not a column"):
        resolve_column_roles(["anchor", "positive"], positive="answer")
    roles = resolve_column_roles(["q", "d"], anchor="q", positive="d")
    assert (roles.anchor, roles.positive) == ("q", "d")


def test_collator_orders_roles_and_pads_together(tmp_path):
    tok = bert_tokenizer(tmp_path)
    roles = resolve_column_roles(["anchor", "positive", "negative"])
    rows = [
        {"anchor": "a man", "positive": "the man", "negative": "a dog runs in the big park"},
        {"anchor": "cat sleeps", "positive": "a cat sleeps", "negative": "it rains"},
    ]
    batch = ContrastiveDataCollator(tok, roles, max_length=6)(rows)
    assert batch["input_ids"].shape == (6, 6)  # 3 roles x 2 rows, truncated to 6
    expected = tok(
        ["a man", "cat sleeps", "the man", "a cat sleeps", "a dog runs in the big park", "it rains"],
        padding=True,
        truncation=True,
        max_length=6,
        return_tensors="pt",
    )
    assert torch.equal(batch["input_ids"], expected["input_ids"])
    scored = ContrastiveDataCollator(tok, resolve_column_roles(["sentence1", "sentence2", "score"]))(
        [{"sentence1": "a", "sentence2": "b", "score": 4.5}, {"sentence1": "c", "sentence2": "d", "score": 1}]
    )
    assert scored["scores"].tolist() == [4.5, 1.0]
    with pytest.raises(TypeError, match="must hold strings"):
        ContrastiveDataCollator(tok, roles)([{"anchor": 3, "positive": "x", "negative": "y"}])


def test_collator_pretokenised(tmp_path):
    tok = bert_tokenizer(tmp_path)
    roles = resolve_column_roles(["anchor_input_ids", "positive_input_ids"])
    rows = [
        {"anchor_input_ids": [2, 5, 3], "positive_input_ids": [2, 6, 7, 3]},
        {"anchor_input_ids": [2, 8, 3], "positive_input_ids": [2, 9, 3]},
    ]
    batch = ContrastiveDataCollator(tok, roles)(rows)
    assert batch["input_ids"].tolist() == [[2, 5, 3, 0], [2, 8, 3, 0], [2, 6, 7, 3], [2, 9, 3, 0]]
    assert batch["attention_mask"][2].tolist() == [1, 1, 1, 1]


def test_no_duplicates_sampler():
    rows = [(f"a{i % 7}", f"p{i}") for i in range(40)]  # anchors repeat every 7 rows
    sampler = NoDuplicatesBatchSampler(rows, batch_size=5, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    seen = [i for b in batches for i in b]
    assert sorted(seen) == list(range(40))  # nothing lost, nothing repeated
    for b in batches:
        texts = [t for i in b for t in rows[i]]
        assert len(texts) == len(set(texts))
    assert list(NoDuplicatesBatchSampler(rows, 5, seed=3)) == batches  # deterministic
    sampler.set_epoch(1)
    assert list(sampler) != batches  # reshuffled per epoch
    dropped = list(NoDuplicatesBatchSampler(rows, 5, drop_last=True, seed=3))
    assert all(len(b) == 5 for b in dropped)
    same = NoDuplicatesBatchSampler([("x",)] * 3, batch_size=2)
    assert sorted(len(b) for b in same) == [1, 1, 1]  # identical rows never share a batch
    with pytest.raises(ValueError, match="batch_size"):
        NoDuplicatesBatchSampler(rows, 0)
