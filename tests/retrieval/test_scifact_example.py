"""examples/retrieval_scifact.py chooses the reranker's settings on dev claims carved from the training claims."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import pytest
from tiny_models import WORDS, save_tiny_bert

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "retrieval_scifact.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("retrieval_scifact_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dev_split_is_seeded_disjoint_and_complete(example):
    queries = {f"q{i}": f"claim {i}" for i in range(20)}
    qrels = {q: {f"d{i}": 1} for i, q in enumerate(queries)}
    train_q, train_r, dev_q, dev_r = example.split_dev(queries, qrels, 0.25, seed=3)
    assert len(dev_q) == 5 and len(train_q) == 15
    assert not set(train_q) & set(dev_q) and set(train_q) | set(dev_q) == set(queries)
    assert set(train_r) == set(train_q) and set(dev_r) == set(dev_q)
    assert example.split_dev(queries, qrels, 0.25, seed=3)[2] == dev_q  # same seed, same split
    assert example.split_dev(queries, qrels, 0.25, seed=4)[2] != dev_q
    with pytest.raises(ValueError, match="fraction"):
        example.split_dev(queries, qrels, 1.0, seed=0)


def test_selection_takes_the_best_dev_score_and_the_cheaper_setting_on_ties(example):
    scores = {
        ("cls", 1.0): {5: 0.30, 20: 0.40},
        ("cls", 3.0): {5: 0.50, 20: 0.50},
        ("mean", 1.0): {5: 0.45, 20: 0.20},
        ("mean", 3.0): {5: 0.10, 20: 0.50},
    }
    trained = []

    def train(pooling, epochs):
        trained.append((pooling, epochs))
        return (pooling, epochs)

    out = example.select_reranker_settings(
        train, lambda model, k: scores[model][k], ["cls", "mean"], [3.0, 1.0], [20, 5]
    )
    assert trained == [("cls", 1.0), ("cls", 3.0), ("mean", 1.0), ("mean", 3.0)]
    assert len(out["trials"]) == 8
    # 0.50 three times: (cls, 3 epochs, top 5) comes first and is the cheapest of them
    assert out["chosen"] == {"pooling": "cls", "epochs": 3.0, "top_k": 5, "dev_ndcg@10": 0.50}
    assert out["model"] == ("cls", 3.0)


def _beir_folder(root: Path) -> Path:
    rng = random.Random(0)
    folder = root / "retrieval" / "scifact"
    (folder / "qrels").mkdir(parents=True)
    docs = {f"d{i}": " ".join(rng.choice(WORDS) for _ in range(8)) for i in range(24)}
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as f:
        for d, text in docs.items():
            f.write(json.dumps({"_id": d, "title": "", "text": text}) + "\n")
    queries, split = {}, {"train": [], "test": []}
    for i in range(16):
        doc = f"d{i}"
        queries[f"q{i}"] = " ".join(docs[doc].split()[:4])
        split["train" if i < 12 else "test"].append((f"q{i}", doc))
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as f:
        for q, text in queries.items():
            f.write(json.dumps({"_id": q, "text": text}) + "\n")
    for name, rows in split.items():
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t1" for q, d in rows]
        (folder / "qrels" / f"{name}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_rerank_stage_chooses_on_dev_and_touches_test_once(example, tmp_path, monkeypatch):
    _beir_folder(tmp_path / "data")
    save_tiny_bert(tmp_path / "bert")
    calls = []
    real = example.rerank_and_fuse

    def recording(reranker, results, corpus, queries, top_k, progress):
        calls.append((set(queries), top_k))
        return real(reranker, results, corpus, queries, top_k, progress)

    monkeypatch.setattr(example, "rerank_and_fuse", recording)
    run = example.main(
        [
            "--stages", "rerank", "--data", str(tmp_path / "data"), "--model", str(tmp_path / "bert"),
            "--output-dir", str(tmp_path / "out"), "--dev-fraction", "0.25", "--seed", "1",
            "--rerank-pooling", "cls,mean", "--rerank-epochs", "1,2", "--rerank-top-k", "3,8",
            "--rerank-negatives", "2", "--rerank-batch-size", "4", "--rerank-max-length", "32",
            "--range-max", "10",
        ]
    )  # fmt: skip
    dev, test = set(run.dev_queries), set(run.queries)
    assert len(dev) == 3 and not dev & set(run.train_queries) and not dev & test
    # the reranker's training groups come from the training claims only
    assert set(run.train_pairs()["anchor"]) == {run.train_queries[q] for q in run.train_queries}
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    selection = saved["selection"]
    assert len(selection["trials"]) == 2 * 2 * 2 and selection["dev_claims"] == 3
    best = max(t["dev_ndcg@10"] for t in selection["trials"])
    chosen = selection["chosen"]
    assert chosen["dev_ndcg@10"] == best
    # every selection call saw dev claims only; the test claims were reranked once, at the chosen depth
    assert [c for c in calls if c[0] != dev] == [(test, chosen["top_k"])]
    assert len(calls) == 1 + 8
    rows = {r["system"]: r for r in saved["rows"]}
    reranked = f"+ cross-encoder reranker (top {chosen['top_k']} of MiniLM)"
    assert reranked in rows and "chosen on dev" in rows[reranked]["note"]
    assert f"{chosen['pooling']} pooling, {chosen['epochs']:g} epoch(s)" in rows[reranked]["note"]
