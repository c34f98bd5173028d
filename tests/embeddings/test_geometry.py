"""Alignment and uniformity (Wang & Isola 2020) against hand computations in float64, and the STS-B
evaluator that computes them as SimCSE does (positives: gold > 4; uniformity over the distinct sentences)."""

from __future__ import annotations

import csv
import math
from itertools import combinations

import numpy as np
import pytest
import torch
from datasets import Dataset
from tiny_models import WORDS

from hf_contrastive import ContrastiveConfig, ContrastiveTrainer
from hf_contrastive.embeddings.geometry import AlignmentUniformityEvaluator, alignment, uniformity

# float64 sums of a few dozen terms of magnitude <= 4 (distances of unit vectors): rounding is ~1e-15 relative.
F64 = 1e-12


def _unit(rows):
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def hand_alignment(x, y, alpha=2.0):
    x, y = _unit(x), _unit(y)
    return sum(math.sqrt(sum((a - b) ** 2 for a, b in zip(u, v))) ** alpha for u, v in zip(x, y)) / len(x)


def hand_uniformity(x, t=2.0):
    x = _unit(x)
    terms = [
        math.exp(-t * sum((a - b) ** 2 for a, b in zip(x[i], x[j])))
        for i, j in combinations(range(len(x)), 2)
    ]
    return math.log(sum(terms) / len(terms))


@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.0])
def test_alignment_equals_the_hand_formula(alpha):
    g = np.random.default_rng(0)
    x, y = g.normal(size=(7, 5)), g.normal(size=(7, 5))
    assert alignment(x, y, alpha) == pytest.approx(hand_alignment(x, y, alpha), rel=F64, abs=F64)
    # torch input, any scale per row: the rows are normalised first.
    scaled = torch.tensor(x * g.uniform(0.1, 10, size=(7, 1)), dtype=torch.float32)
    expected = hand_alignment(scaled.double().numpy(), y, alpha)
    assert alignment(scaled, torch.tensor(y), alpha) == pytest.approx(expected, rel=F64, abs=F64)


@pytest.mark.parametrize("t", [0.5, 2.0, 7.0])
@pytest.mark.parametrize("chunk_size", [1, 3, 1024])
def test_uniformity_equals_the_hand_formula_for_every_chunking(t, chunk_size):
    x = np.random.default_rng(1).normal(size=(9, 4))
    assert uniformity(x, t, chunk_size=chunk_size) == pytest.approx(hand_uniformity(x, t), rel=F64, abs=F64)


def test_known_geometries():
    # Antipodal points: one pair at squared distance 4; the orthonormal basis: every pair at squared distance 2.
    assert uniformity([[1.0, 0.0], [-3.0, 0.0]]) == pytest.approx(-8.0, abs=F64)
    assert uniformity(np.eye(6), t=1.5, chunk_size=2) == pytest.approx(-3.0, abs=F64)
    # One point repeated: perfectly aligned, not uniform at all.
    same = [[0.3, 0.4]] * 4
    assert alignment(same, same) == 0.0
    assert uniformity(same) == pytest.approx(0.0, abs=F64)
    assert alignment([[1.0, 0.0]], [[-1.0, 0.0]], alpha=3) == pytest.approx(8.0, abs=F64)


def test_normalize_false_takes_embeddings_as_they_are():
    x, y = np.array([[2.0, 0.0], [0.0, 1.0]]), np.array([[0.0, 0.0], [0.0, 3.0]])
    assert alignment(x, y, normalize=False) == pytest.approx((4.0 + 4.0) / 2, abs=F64)
    assert uniformity(x, t=1.0, normalize=False) == pytest.approx(-5.0, abs=F64)


def test_bad_inputs_are_refused():
    ok = np.eye(3)
    with pytest.raises(ValueError, match="same shape"):
        alignment(ok, ok[:2])
    with pytest.raises(ValueError, match="alpha"):
        alignment(ok, ok, alpha=0)
    with pytest.raises(ValueError, match="t must be"):
        uniformity(ok, t=-1)
    with pytest.raises(ValueError, match="at least 2"):
        uniformity(ok[:1])
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        alignment(np.ones(3), np.ones(3))
    nan = ok.copy()
    nan[1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        uniformity(nan)
    zero = ok.copy()
    zero[2] = 0
    with pytest.raises(ValueError, match="all-zero"):
        alignment(zero, ok)
    assert alignment(zero, zero, normalize=False) == 0.0  # a zero row is a fine point when not normalising


class TableEncoder:
    """A model whose embedding of each sentence is a fixed row of a table (and which counts its inputs)."""

    def __init__(self, sentences, dim=4, seed=0):
        g = np.random.default_rng(seed)
        self.table = {s: g.normal(size=dim) for s in sentences}
        self.seen = []

    def encode(self, texts, batch_size=32):
        self.seen.extend(texts)
        return torch.tensor(np.stack([self.table[t] for t in texts]), dtype=torch.float32)


PAIRS = [
    ("a man eats", "a man is eating", 4.6),
    ("a dog runs", "a dog is running", 5.0),
    ("a cat sleeps", "a man eats", 4.0),  # exactly 4: not a positive pair (strictly above 4)
    ("it rains", "the sun shines", 0.4),
    ("a man eats", "a woman plays guitar", 1.2),
]


def test_evaluator_follows_simcse_positive_pairs_above_4_and_distinct_sentences():
    sentences = list(dict.fromkeys([s for p in PAIRS for s in p[:2]]))
    model = TableEncoder(sentences)
    ev = AlignmentUniformityEvaluator(PAIRS, name="stsb")
    out = ev(model)
    assert set(out) == {"stsb_alignment", "stsb_uniformity"}
    assert ev.num_positive_pairs == 2
    assert sorted(model.seen) == sorted(sentences)  # each distinct sentence embedded once
    vec = {s: model.table[s].astype(np.float32).astype(np.float64) for s in sentences}
    pos = [p for p in PAIRS if p[2] > 4]
    expected_align = hand_alignment([vec[a] for a, _, _ in pos], [vec[b] for _, b, _ in pos])
    assert out["stsb_alignment"] == pytest.approx(expected_align, rel=F64, abs=F64)
    assert out["stsb_uniformity"] == pytest.approx(
        hand_uniformity([vec[s] for s in sentences]), rel=F64, abs=F64
    )

    # Repeats kept: "a man eats" appears three times, adding pairs at distance 0.
    kept = AlignmentUniformityEvaluator(PAIRS, deduplicate=False)(TableEncoder(sentences))
    occurrences = [vec[a] for a, _, _ in PAIRS] + [vec[b] for _, b, _ in PAIRS]
    assert kept["stsb_uniformity"] == pytest.approx(hand_uniformity(occurrences), rel=F64, abs=F64)
    assert kept["stsb_alignment"] == pytest.approx(expected_align, rel=F64, abs=F64)
    assert kept["stsb_uniformity"] > out["stsb_uniformity"]


def test_evaluator_refuses_data_without_positive_pairs_and_nan_embeddings():
    with pytest.raises(ValueError, match="above positive_threshold=4"):
        AlignmentUniformityEvaluator([p for p in PAIRS if p[2] <= 4])
    with pytest.raises(ValueError, match="one"):
        AlignmentUniformityEvaluator([("same", "same", 5.0)])
    ev = AlignmentUniformityEvaluator(PAIRS)
    with pytest.raises(ValueError, match="NaN"):
        ev(lambda texts: torch.full((len(texts), 3), float("nan")))


def test_evaluator_in_contrastive_trainer(tiny_encoder, tmp_path):
    g = np.random.default_rng(3)
    sentences = [" ".join(g.choice(WORDS, size=5)) for _ in range(16)]
    ds = Dataset.from_dict({"anchor": sentences[:8], "positive": sentences[8:]})
    ev = AlignmentUniformityEvaluator(PAIRS, batch_size=4)
    args = ContrastiveConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = ContrastiveTrainer(model=tiny_encoder, args=args, train_dataset=ds, evaluators=[ev])
    metrics = trainer.evaluate()
    direct = ev(tiny_encoder)
    assert metrics["eval_stsb_alignment"] == pytest.approx(direct["stsb_alignment"], rel=F64, abs=F64)
    assert metrics["eval_stsb_uniformity"] == pytest.approx(direct["stsb_uniformity"], rel=F64, abs=F64)
    # And the figures are those of the model's own embeddings, by the formulas.
    sents = ev.sentences
    emb = tiny_encoder.encode(sents, batch_size=4).double().numpy()
    row = {s: i for i, s in enumerate(sents)}
    pos = [p for p in PAIRS if p[2] > 4]
    expected = hand_alignment([emb[row[a]] for a, _, _ in pos], [emb[row[b]] for _, b, _ in pos])
    assert direct["stsb_alignment"] == pytest.approx(expected, rel=F64, abs=F64)
    assert direct["stsb_uniformity"] == pytest.approx(hand_uniformity(emb), rel=F64, abs=F64)


@pytest.mark.integration
def test_sts_benchmark_dev_pairs_and_sentences_match_the_file(shared_data):
    ev = AlignmentUniformityEvaluator.sts_benchmark("dev")
    with open(shared_data / "sts" / "stsbenchmark" / "sts-dev.csv", encoding="utf-8") as f:
        rows = [r[:7] for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    assert ev.num_pairs == len(rows) == 1500
    assert ev.num_positive_pairs == sum(float(r[4]) > 4 for r in rows)
    assert len(ev.sentences) == len({s for r in rows for s in r[5:7]})
    every = AlignmentUniformityEvaluator.sts_benchmark("all")
    assert every.num_pairs == 5749 + 1500 + 1379
    with pytest.raises(ValueError, match="split"):
        AlignmentUniformityEvaluator.sts_benchmark("validation")
