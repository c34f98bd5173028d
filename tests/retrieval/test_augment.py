"""Pair builders: Contriever crops with word deletion, inverse cloze, context windows; seeded."""

from __future__ import annotations

import random

import pytest

from hf_contrastive.retrieval.augment import (
    context_window_pairs,
    inverse_cloze_pairs,
    random_crop,
    random_crop_pairs,
    split_sentences,
    word_deletion,
)

DOCS = [" ".join(f"w{d}_{i}" for i in range(100)) for d in range(30)]
SENT_DOCS = [
    "The cell divides. Its nucleus splits in two. Proteins fold. DNA is copied. The membrane pinches.",
    "Only one sentence here.",
    "Mice were treated. Tumours shrank by 40%. Side effects were mild.",
]


def test_random_crop_is_a_contiguous_span_within_the_ratio_range():
    words = [str(i) for i in range(200)]
    rng = random.Random(0)
    lengths = []
    for _ in range(300):
        crop = random_crop(words, (0.1, 0.5), rng)
        start = int(crop[0])
        assert crop == words[start : start + len(crop)]
        lengths.append(len(crop))
    assert min(lengths) >= 20 and max(lengths) <= 100
    assert min(lengths) < 30 and max(lengths) > 90  # the whole range is used
    assert len(random_crop(words, (0.1, 0.5), rng, max_words=7)) <= 7


def test_word_deletion_rate_and_order():
    words = [str(i) for i in range(10_000)]
    kept = word_deletion(words, 0.1, random.Random(1))
    assert 0.88 < len(kept) / len(words) < 0.92
    assert [int(w) for w in kept] == sorted(int(w) for w in kept)
    assert word_deletion(["only"], 0.9, random.Random(0)) == ["only"]
    assert word_deletion(words[:5], 0.0, random.Random(0)) == words[:5]


def test_crop_pairs_are_independent_views_of_the_same_document_and_seeded():
    ds = random_crop_pairs(DOCS, ratio_range=(0.1, 0.5), deletion_prob=0.1, pairs_per_text=2, seed=3)
    assert len(ds) == 60 and ds.column_names == ["anchor", "positive", "doc_index"]
    for row in ds:
        prefix = f"w{row['doc_index']}_"
        assert all(w.startswith(prefix) for w in row["anchor"].split() + row["positive"].split())
    assert sum(r["anchor"] != r["positive"] for r in ds) > 55  # two independent crops
    again = random_crop_pairs(DOCS, ratio_range=(0.1, 0.5), deletion_prob=0.1, pairs_per_text=2, seed=3)
    assert again[:] == ds[:]
    other = random_crop_pairs(DOCS, ratio_range=(0.1, 0.5), deletion_prob=0.1, pairs_per_text=2, seed=4)
    assert other["anchor"] != ds["anchor"]
    # a document's pairs depend only on (seed, index): the same with fewer documents around it
    part = random_crop_pairs(DOCS[:5], pairs_per_text=2, seed=3, deletion_prob=0.1)
    assert part["anchor"] == ds["anchor"][:10]


def test_inverse_cloze_pairs():
    ds = inverse_cloze_pairs(SENT_DOCS, remove_prob=1.0, pairs_per_text=2, seed=0)
    assert set(ds["doc_index"]) == {0, 2}  # the one-sentence document is skipped
    for row in ds:
        sents = split_sentences(SENT_DOCS[row["doc_index"]])
        assert row["anchor"] in sents and row["anchor"] not in row["positive"]
        assert all(s in row["positive"] for s in sents if s != row["anchor"])
    kept = inverse_cloze_pairs(SENT_DOCS, remove_prob=0.0, seed=0)
    assert all(r["anchor"] in r["positive"] for r in kept)
    assert inverse_cloze_pairs(SENT_DOCS, seed=5)[:] == inverse_cloze_pairs(SENT_DOCS, seed=5)[:]


def test_context_window_pairs():
    ds = context_window_pairs(SENT_DOCS, window=1, pairs_per_text=20, seed=0)
    for row in ds:
        sents = split_sentences(SENT_DOCS[row["doc_index"]])
        i, j = sents.index(row["anchor"]), sents.index(row["positive"])
        assert 1 <= abs(i - j) <= 1
    wide = context_window_pairs([SENT_DOCS[0]], window=4, pairs_per_text=200, seed=0)
    sents = split_sentences(SENT_DOCS[0])
    assert max(abs(sents.index(r["anchor"]) - sents.index(r["positive"])) for r in wide) == 4


def test_bad_input():
    with pytest.raises(ValueError, match=r"ratio_range must satisfy 0 < min <= max <= 1, got \(0.6, 0.2\)"):
        random_crop_pairs(DOCS, ratio_range=(0.6, 0.2))
    with pytest.raises(ValueError, match="deletion_prob must be a probability"):
        random_crop_pairs(DOCS, deletion_prob=1.0)
    with pytest.raises(TypeError, match="sequence of strings"):
        random_crop_pairs("one document")
    with pytest.raises(ValueError, match="no document has two sentences"):
        inverse_cloze_pairs(["One sentence only."])
    with pytest.raises(ValueError, match="window must be >= 1"):
        context_window_pairs(SENT_DOCS, window=0)
