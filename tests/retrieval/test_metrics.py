"""Retrieval metrics, exact search and the evaluator on hand-computed cases and tiny models."""

from __future__ import annotations

import json
import logging
import math
import random

import pytest
import torch
from datasets import Dataset
from tiny_models import WORDS, bert_config, bert_tokenizer

from hf_contrastive import ContrastiveConfig, ContrastiveTrainer, SentenceEncoder, SentenceEncoderConfig
from hf_contrastive.retrieval.evaluation import (
    RetrievalEvaluator,
    document_text,
    evaluate_retrieval,
    exact_search,
    load_beir,
    retrieval_metrics,
)


def test_metrics_hand_computed_graded():
    qrels = {
        "q1": {"d1": 2, "d2": 1, "d9": 1},  # d9 is never retrieved
        "q2": {"d5": 1},
        "q3": {"d7": 0},  # no relevant document: not evaluated
    }
    results = {"q1": ["d3", "d1", "d4", "d2", "d5"], "q2": ["d5", "d1"], "q3": ["d7"]}
    m = retrieval_metrics(results, qrels, k_values=(1, 5))
    # q1 at k=5: hits at ranks 2 and 4 (1-based).
    dcg = 2 / math.log2(3) + 1 / math.log2(5)
    idcg = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    q1 = {
        "ndcg@5": dcg / idcg,
        "mrr@5": 1 / 2,
        "recall@5": 2 / 3,
        "precision@5": 2 / 5,
        "accuracy@5": 1.0,
        "map@5": (1 / 2 + 2 / 4) / 3,
    }
    # q2 at k=5: its only relevant document first.
    q2 = {"ndcg@5": 1.0, "mrr@5": 1.0, "recall@5": 1.0, "precision@5": 1 / 5, "accuracy@5": 1.0, "map@5": 1.0}
    for key in q1:
        assert m[key] == pytest.approx((q1[key] + q2[key]) / 2, abs=1e-12), key
    # k=1: q1 misses (0 everywhere), q2 hits (1 everywhere).
    for metric in ("ndcg", "mrr", "recall", "precision", "accuracy", "map"):
        assert m[f"{metric}@1"] == pytest.approx(0.5), metric


def test_metrics_match_sentence_transformers_binary():
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    rng = random.Random(0)
    docs = [f"d{i:02d}" for i in range(40)]
    qrels, results, st_lists = {}, {}, []
    for q in range(25):
        qid = f"q{q}"
        qrels[qid] = dict.fromkeys(rng.sample(docs, rng.randint(1, 6)), 1)
        ranked = rng.sample(docs, 30)
        results[qid] = ranked
        st_lists.append([{"corpus_id": d, "score": 1.0 - r / 100} for r, d in enumerate(ranked)])
    ks = [1, 3, 5, 10]
    ev = InformationRetrievalEvaluator(
        queries={q: "x" for q in qrels},
        corpus=dict.fromkeys(docs, "x"),
        relevant_docs={q: set(d) for q, d in qrels.items()},
        mrr_at_k=ks,
        ndcg_at_k=ks,
        accuracy_at_k=ks,
        precision_recall_at_k=ks,
        map_at_k=ks,
    )
    ref = ev.compute_metrics(st_lists)
    ours = retrieval_metrics(results, qrels, k_values=ks)
    for metric in ("ndcg", "mrr", "recall", "precision", "accuracy", "map"):
        for k in ks:
            assert ours[f"{metric}@{k}"] == pytest.approx(float(ref[f"{metric}@k"][k]), abs=1e-12), (
                metric,
                k,
            )


def test_exact_search_chunked_equals_full_and_ties_by_id():
    torch.manual_seed(0)
    q = torch.randn(7, 16, dtype=torch.float64)
    d = torch.randn(50, 16, dtype=torch.float64)
    d[10] = d[3]  # exact duplicates: tie broken by ascending id
    d[40] = d[3]
    ids = [f"doc{i:03d}" for i in range(50)]
    full = exact_search(q, d, ids, 12, chunk_size=50)
    for chunk in (1, 7, 16):
        part = exact_search(q, d, ids, 12, chunk_size=chunk)
        assert [[x for x, _ in h] for h in part] == [[x for x, _ in h] for h in full]
        for h, f in zip(part, full):
            assert [s for _, s in h] == pytest.approx([s for _, s in f], abs=1e-12)
    scores = torch.nn.functional.normalize(q, dim=-1) @ torch.nn.functional.normalize(d, dim=-1).T
    for i in range(7):
        order = sorted(range(50), key=lambda j: (-float(scores[i, j]), ids[j]))[:12]
        assert [x for x, _ in full[i]] == [ids[j] for j in order]
    # A query equal to the duplicated document ranks its three copies first, by id.
    hits = exact_search(d[3:4], d, ids, 3)[0]
    assert [x for x, _ in hits] == ["doc003", "doc010", "doc040"]
    dot = exact_search(q, d, ids, 5, score_function="dot")
    assert dot[0][0][1] == pytest.approx(float((q[0] @ d.T).max()), rel=1e-6)
    with pytest.raises(ValueError, match="score_function"):
        exact_search(q, d, ids, 5, score_function="l2")


class BagOfWords:
    """A deterministic 'model': word-count vectors over a fixed vocabulary."""

    def __init__(self):
        self.vocab = {w: i for i, w in enumerate(sorted(set(WORDS)))}
        self.calls = []

    def encode(self, texts, batch_size=32, show_progress_bar=False):
        self.calls.append(("encode", len(texts)))
        out = torch.zeros(len(texts), len(self.vocab))
        for i, t in enumerate(texts):
            for w in t.lower().replace(".", " ").split():
                if w in self.vocab:
                    out[i, self.vocab[w]] += 1
        return out + 1e-3


class QueryDocModel(BagOfWords):
    def encode_queries(self, texts, batch_size=32, **kwargs):
        self.calls.append(("queries", len(texts), kwargs.get("prompt")))
        return self.encode(texts)

    def encode_documents(self, texts, batch_size=32, **kwargs):
        self.calls.append(("documents", len(texts), kwargs.get("prompt")))
        return self.encode(texts)


CORPUS = {
    "1": {"title": "dog", "text": "dog runs in park"},
    "2": {"title": "cat", "text": "cat sleeps on sofa"},
    "3": {"title": "", "text": "woman plays guitar loud music"},
    "4": {"title": "car", "text": "red car drives fast"},
}
QUERIES = {"a": "where does the dog run", "b": "sleeping cat", "c": "guitar music", "z": "no judgement"}
QRELS = {"a": {"1": 1}, "b": {"2": 1}, "c": {"3": 1}}


def test_evaluate_retrieval_bag_of_words_and_bad_input(caplog):
    assert document_text(CORPUS["1"]) == "dog dog runs in park"
    assert document_text(CORPUS["3"]) == "woman plays guitar loud music"
    m = evaluate_retrieval(BagOfWords(), CORPUS, QUERIES, QRELS, k_values=(1, 3))
    assert m["ndcg@1"] == 1.0 and m["num_queries"] == 3 and m["num_documents"] == 4
    assert m["unknown_qrels_queries"] == 0 and m["unknown_qrels_documents"] == 0
    # Unknown ids are counted and logged, not fatal; unknown documents stay in the denominators.
    bad = {**QRELS, "ghost": {"1": 1}, "a": {"1": 1, "404": 1}}
    with caplog.at_level(logging.WARNING, logger="hf_contrastive.retrieval.evaluation"):
        m = evaluate_retrieval(BagOfWords(), CORPUS, QUERIES, bad, k_values=(1, 3))
    assert m["unknown_qrels_queries"] == 1 and m["unknown_qrels_documents"] == 1
    assert m["recall@3"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert "1 query id(s)" in caplog.text
    with pytest.raises(ValueError, match="corpus is empty"):
        evaluate_retrieval(BagOfWords(), {}, QUERIES, QRELS)
    with pytest.raises(ValueError, match="k_values"):
        evaluate_retrieval(BagOfWords(), CORPUS, QUERIES, QRELS, k_values=(0,))
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluate_retrieval(BagOfWords(), CORPUS, QUERIES, {"a": {"1": 0}})
    with pytest.raises(TypeError, match="encode"):
        evaluate_retrieval(object(), CORPUS, QUERIES, QRELS)


def test_query_and_document_encoders_and_prompts_are_used():
    model = QueryDocModel()
    evaluate_retrieval(model, CORPUS, QUERIES, QRELS, query_prompt="query: ", document_prompt="passage: ")
    assert ("queries", 3, "query: ") in model.calls and ("documents", 4, "passage: ") in model.calls
    # A plain encode() without a prompt argument gets the prompt prepended to the text.
    plain = BagOfWords()
    seen = []
    plain.encode = lambda texts, batch_size=32: seen.extend(texts) or BagOfWords.encode(plain, texts)
    evaluate_retrieval(plain, CORPUS, QUERIES, QRELS, query_prompt="q: ")
    assert "q: sleeping cat" in seen


def test_load_beir_folder(tmp_path):
    (tmp_path / "qrels").mkdir()
    with open(tmp_path / "corpus.jsonl", "w") as f:
        for did, doc in CORPUS.items():
            f.write(json.dumps({"_id": did, **doc}) + "\n")
    with open(tmp_path / "queries.jsonl", "w") as f:
        for qid, text in QUERIES.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\na\t1\t1\nb\t2\t2\nc\t3\t1\n")
    corpus, queries, qrels = load_beir(tmp_path, "test")
    assert corpus == CORPUS and set(queries) == {"a", "b", "c"} and qrels["b"] == {"2": 2}
    with pytest.raises(FileNotFoundError, match="available splits"):
        load_beir(tmp_path, "dev")
    with pytest.raises(FileNotFoundError):
        load_beir(tmp_path / "missing")


def test_evaluator_prefixes_and_trainer_callback(tmp_path):
    torch.manual_seed(0)
    tok = bert_tokenizer(tmp_path / "vocab")
    model = SentenceEncoder(SentenceEncoderConfig(backbone_config=bert_config(len(tok))))
    model.tokenizer = tok
    ev = RetrievalEvaluator(CORPUS, QUERIES, QRELS, name="toy", k_values=(1, 3))
    direct = ev(model)
    assert list(direct)[0] == "toy_ndcg@3" and ev.primary_metric == "toy_ndcg@3"
    assert set(ev.compute(model)) == {f"eval_{k}" for k in direct}
    with pytest.raises(ValueError, match="main_metric"):
        RetrievalEvaluator(CORPUS, QUERIES, QRELS, main_metric="ndcg@10", k_values=(1, 3))

    pairs = Dataset.from_dict(
        {
            "anchor": [QUERIES[q] for q in QRELS] * 2,
            "positive": [CORPUS[d]["text"] for q in QRELS for d in QRELS[q]] * 2,
        }
    )
    args = ContrastiveConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=3,
        max_steps=2,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        no_duplicates=False,
    )
    trainer = ContrastiveTrainer(
        model=model, args=args, train_dataset=pairs, eval_dataset=pairs, callbacks=[ev.callback()]
    )
    before = trainer.evaluate()
    assert before["eval_toy_ndcg@3"] == pytest.approx(direct["toy_ndcg@3"], abs=1e-6)
    trainer.train()
    after = trainer.evaluate()
    assert after["eval_toy_ndcg@3"] == pytest.approx(ev(trainer.model)["toy_ndcg@3"], abs=1e-6)
    assert any("eval_toy_ndcg@3" in row for row in trainer.state.log_history)
