"""STS evaluation against correlations computed by hand, and input validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, rankdata

from hf_contrastive.embeddings.sts import (
    STSEvaluator,
    STSExample,
    aggregate_senteval,
    evaluate_sts,
    load_sts_benchmark,
)


class TableEncoder:
    """Looks embeddings up in a fixed table: evaluation maths can be checked exactly."""

    def __init__(self, table):
        self.table = table
        self.calls = 0

    def encode(self, texts, batch_size=32):
        self.calls += 1
        return torch.stack([self.table[t] for t in texts])


def spearman_by_hand(x, y):
    rx, ry = rankdata(x), rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx * ry).sum() / np.sqrt((rx**2).sum() * (ry**2).sum()))


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    words = [f"s{i}" for i in range(20)]
    table = {w: torch.randn(6, generator=g) for w in words}
    pairs = [(words[i], words[i + 10]) for i in range(10)]
    gold = [float(x) for x in torch.rand(10, generator=g) * 5]
    return table, pairs, gold


def test_correlations_match_hand_computation(data):
    table, pairs, gold = data
    res = evaluate_sts(TableEncoder(table), pairs, scores=gold, return_predictions=True)
    a = torch.stack([table[p[0]] for p in pairs]).double()
    b = torch.stack([table[p[1]] for p in pairs]).double()
    expected = {
        "cosine": (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)),
        "dot": (a * b).sum(1),
        "euclidean": -((a - b) ** 2).sum(1).sqrt(),
        "manhattan": -(a - b).abs().sum(1),
    }
    for sim, pred in expected.items():
        np.testing.assert_allclose(res[f"predictions_{sim}"], pred.numpy(), rtol=1e-12)
        assert res[f"spearman_{sim}"] == pytest.approx(spearman_by_hand(pred.numpy(), gold), abs=1e-12)
        assert res[f"pearson_{sim}"] == pytest.approx(pearsonr(pred.numpy(), gold)[0], abs=1e-12)


def test_input_forms_agree(data):
    from datasets import Dataset

    table, pairs, gold = data
    enc = TableEncoder(table)
    base = evaluate_sts(enc, pairs, scores=gold, similarities=("cosine",))
    triples = evaluate_sts(enc, [(a, b, s) for (a, b), s in zip(pairs, gold)], similarities=("cosine",))
    examples = evaluate_sts(
        enc, [STSExample(a, b, s) for (a, b), s in zip(pairs, gold)], similarities=("cosine",)
    )
    ds = Dataset.from_dict({"s1": [p[0] for p in pairs], "s2": [p[1] for p in pairs], "label": gold})
    dataset = evaluate_sts(
        enc, ds, sentence1_column="s1", sentence2_column="s2", score_column="label", similarities=("cosine",)
    )
    assert base == triples == examples == dataset
    evaluator = STSEvaluator(
        ds, name="stsb", sentence1_column="s1", sentence2_column="s2", score_column="label"
    )
    assert evaluator(enc)["stsb_spearman"] == pytest.approx(base["spearman_cosine"])


def test_bad_inputs(data):
    from datasets import Dataset

    table, pairs, gold = data
    with pytest.raises(
        ValueError, match="Mismatched lengths: 10 first sentences, 10 second sentences, 9 scores"
    ):
        evaluate_sts(TableEncoder(table), pairs, scores=gold[:9])
    with pytest.raises(ValueError, match="missing column"):
        evaluate_sts(TableEncoder(table), Dataset.from_dict({"a": ["x"], "b": ["y"], "score": [1.0]}))
    with pytest.raises(ValueError, match="Unknown similarity"):
        evaluate_sts(TableEncoder(table), pairs, scores=gold, similarities=("jaccard",))
    with pytest.raises(ValueError, match="No STS pairs"):
        evaluate_sts(TableEncoder(table), [], scores=[])
    with pytest.raises(ValueError, match="triples"):
        evaluate_sts(TableEncoder(table), pairs)
    with pytest.raises(TypeError, match="encode"):
        evaluate_sts(object(), pairs, scores=gold)


def test_senteval_all_aggregation():
    rng = np.random.default_rng(0)
    subsets = {
        name: (rng.normal(size=n), rng.normal(size=n)) for name, n in [("a", 30), ("b", 50), ("c", 20)]
    }
    agg = aggregate_senteval(subsets)
    cat_p = np.concatenate([v[0] for v in subsets.values()])
    cat_g = np.concatenate([v[1] for v in subsets.values()])
    assert agg["all"]["spearman"] == pytest.approx(spearman_by_hand(cat_p, cat_g))
    per = [spearman_by_hand(*subsets[k]) for k in "abc"]
    assert agg["mean"]["spearman"] == pytest.approx(np.mean(per))
    assert agg["wmean"]["spearman"] == pytest.approx(np.average(per, weights=[30, 50, 20]))
    assert agg["b"]["n"] == 50
    with pytest.raises(ValueError, match="predictions for"):
        aggregate_senteval({"x": ([1.0, 2.0], [1.0])})


def test_sts_benchmark_reader(shared_data):
    test = load_sts_benchmark("test", shared_data)
    assert len(test) == 1379
    assert all(0.0 <= r.score <= 5.0 for r in test)
    assert len(load_sts_benchmark("train")) == 5749
    with pytest.raises(ValueError, match="split"):
        load_sts_benchmark("validation")
