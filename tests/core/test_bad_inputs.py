"""Core checks behind the wings' refusals: embeddings that tie every score, class ids detected as scores,
empty datasets, and the 1-row tail batch of the duplicate-free sampler."""

from __future__ import annotations

import logging

import pytest
import torch
from datasets import Dataset

from hf_contrastive.core.data.checks import require_rows
from hf_contrastive.core.data.columns import resolve_column_roles
from hf_contrastive.core.data.samplers import NoDuplicatesBatchSampler
from hf_contrastive.core.losses import InfoNCELoss
from hf_contrastive.core.search import check_embeddings

SAMPLER_LOGGER = "hf_contrastive.core.data.samplers"


def test_check_embeddings_names_nan_rows_with_their_ids():
    emb = torch.ones(4, 3)
    emb[1, 0] = float("nan")
    emb[3, 2] = float("inf")
    with pytest.raises(ValueError, match=r"2 of 4 documents: row 1 \(id 'b'\), row 3 \(id 'd'\)"):
        check_embeddings(emb, ["a", "b", "c", "d"], what="documents")


def test_check_embeddings_zero_rows_only_when_asked():
    emb = torch.ones(3, 2)
    emb[2] = 0
    with pytest.raises(ValueError, match=r"all-zero embeddings for 1 of 3 texts: row 2"):
        check_embeddings(emb)
    check_embeddings(emb, refuse_zero=False)


def test_check_embeddings_lists_at_most_ten_rows():
    with pytest.raises(ValueError, match="row 9 and 5 more"):
        check_embeddings(torch.full((15, 2), float("nan")))


def test_detected_integer_score_column_is_refused_with_features():
    ds = Dataset.from_dict({"premise": ["a"], "hypothesis": ["b"], "label": [2]})
    with pytest.raises(ValueError, match="score_column='label'"):
        resolve_column_roles(ds.column_names, features=ds.features)
    # Named explicitly, integers are scores; without features (names only) nothing changes.
    assert resolve_column_roles(ds.column_names, score="label", features=ds.features).score == "label"
    assert resolve_column_roles(ds.column_names).score == "label"
    floats = Dataset.from_dict({"premise": ["a"], "hypothesis": ["b"], "label": [2.5]})
    assert resolve_column_roles(floats.column_names, features=floats.features).layout == "scored_pairs"


def test_require_rows():
    with pytest.raises(ValueError, match="Owner got an empty train_dataset"):
        require_rows(Dataset.from_dict({"a": []}), name="train_dataset", owner="Owner")
    with pytest.raises(ValueError, match=r"eval_dataset\['dev'\]"):
        require_rows({"dev": [], "test": [1]}, name="eval_dataset", owner="Owner")
    require_rows(None, name="eval_dataset", owner="Owner")
    require_rows(iter([]), name="train_dataset", owner="Owner")  # no length: not checked
    require_rows([1], name="train_dataset", owner="Owner")


def test_sampler_merges_a_one_row_tail_into_the_previous_batch(caplog):
    rows = [(f"a{i}", f"p{i}") for i in range(9)]
    assert sorted(len(b) for b in NoDuplicatesBatchSampler(rows, 4)) == [1, 4, 4]  # the old tail
    sampler = NoDuplicatesBatchSampler(rows, 4, min_batch_size=2)
    with caplog.at_level(logging.WARNING, logger=SAMPLER_LOGGER):
        batches = list(sampler)
        again = list(sampler)
    assert sorted(len(b) for b in batches) == [4, 5]
    assert sorted(i for b in batches for i in b) == list(range(9))  # nothing lost
    assert again == batches and len(sampler) == 2
    assert (sampler.merged_rows, sampler.dropped_rows) == (1, 0)
    logged = [r for r in caplog.records if r.name == SAMPLER_LOGGER]
    assert len(logged) == 1 and "1 row(s) merged" in logged[0].getMessage()  # once per epoch


def test_sampler_drops_a_tail_row_that_repeats_a_text_and_says_so(caplog):
    # Three rows share the anchor "x": one pairs with the other row, the two others end alone.
    rows = [("x", "p0"), ("a1", "p1"), ("x", "p2"), ("x", "p3")]
    sampler = NoDuplicatesBatchSampler(rows, 2, min_batch_size=2, seed=0)
    with caplog.at_level(logging.WARNING, logger=SAMPLER_LOGGER):
        batches = list(sampler)
    assert all(len(b) >= 2 for b in batches)
    for b in batches:
        texts = [t for i in b for t in rows[i]]
        assert len(texts) == len(set(texts))
    kept = sum(len(b) for b in batches)
    assert (kept, sampler.dropped_rows, sampler.merged_rows) == (2, 2, 0)
    assert any("skipped this epoch" in r.getMessage() for r in caplog.records)


def test_sampler_min_batch_size_is_checked():
    with pytest.raises(ValueError, match="min_batch_size"):
        NoDuplicatesBatchSampler([("a",)], 2, min_batch_size=3)


def test_no_negatives_error_mentions_removed_duplicates():
    loss = InfoNCELoss()
    with pytest.raises(ValueError, match=r"no negatives.*duplicate.*min_batch_size"):
        loss(torch.randn(1, 4), torch.randn(1, 4))
