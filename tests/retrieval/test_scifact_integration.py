"""SciFact (BEIR test split) with the packaged all-MiniLM-L6-v2: our retrieval figures against
sentence-transformers' InformationRetrievalEvaluator on the same run.

All 300 test queries against a fixed part of the corpus: every judged document plus every 8th other one
(about 950 of the 5183 abstracts), embedded once per module and shared. Embedding the whole corpus at 256
tokens takes about five minutes on 2 CPU cores, so the published figure on the full split (nDCG@10 0.6451)
is checked by `python benchmarks/mteb_parity.py --tasks scifact`, which prints it beside ours.
"""

from __future__ import annotations

import pytest
import torch

from hf_contrastive import SentenceEncoder
from hf_contrastive.retrieval.evaluation import (
    RetrievalEvaluator,
    document_text,
    encode_corpus,
    evaluate_retrieval,
    load_beir,
)

pytestmark = [pytest.mark.slow, pytest.mark.integration]

# Every judged document, and every STRIDE-th of the others, in corpus order.
STRIDE = 8


def corpus_part(corpus, qrels):
    judged = {d for docs in qrels.values() for d in docs}
    others = [d for d in corpus if d not in judged]
    keep = judged | set(others[::STRIDE])
    return {d: doc for d, doc in corpus.items() if d in keep}


@pytest.fixture(scope="module")
def scifact(shared_data, require_resource):
    folder = shared_data / "retrieval" / "scifact"
    if not folder.is_dir():
        require_resource(f"SciFact not found at {folder}", "put the BEIR SciFact folder there")
    return load_beir(folder, "test")


@pytest.fixture(scope="module")
def scifact_part(scifact):
    corpus, queries, qrels = scifact
    return corpus_part(corpus, qrels), queries, qrels


@pytest.fixture(scope="module")
def minilm(minilm_path):
    return SentenceEncoder.from_pretrained(str(minilm_path))


@pytest.fixture(scope="module")
def corpus_embeddings(minilm, scifact_part):
    corpus, _, _ = scifact_part
    return encode_corpus(minilm, corpus, batch_size=32)


def test_scifact_split_shape(scifact, shared_data):
    corpus, queries, qrels = scifact
    assert len(corpus) == 5183 and len(queries) == 300
    assert sum(len(v) for v in qrels.values()) == 339
    train_corpus, train_queries, train_qrels = load_beir("scifact", "train")
    assert len(train_queries) == 809 and sum(len(v) for v in train_qrels.values()) == 919
    assert not set(train_queries) & set(queries)
    evaluator = RetrievalEvaluator.from_beir(shared_data / "retrieval" / "scifact", "test")
    assert (len(evaluator.corpus), len(evaluator.queries)) == (5183, 300)
    # Abstract sentences are joined with spaces, not glued together.
    doc = corpus["4983"]
    assert doc["title"].startswith("Microstructural development of human newborn cerebral white matter")
    assert "functional disabilities. A line scan" in doc["text"]


def test_minilm_figures_match_sentence_transformers(minilm, minilm_path, scifact_part, corpus_embeddings):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
    from sentence_transformers.util import cos_sim

    corpus, queries, qrels = scifact_part
    ours = evaluate_retrieval(minilm, corpus, queries, qrels, corpus_embeddings=corpus_embeddings)
    # Fewer distractors than the full split (0.6451), so the same model ranks at least as well here.
    assert 0.6451 - 1e-3 <= ours["ndcg@10"] < 1.0
    assert ours["num_queries"] == 300 and ours["unknown_qrels_documents"] == 0

    st = SentenceTransformer(str(minilm_path), device="cpu")
    # The encoders agree on documents (sampled) and on every query.
    ids = list(corpus)[::19]
    st_docs = torch.as_tensor(st.encode([document_text(corpus[i]) for i in ids], convert_to_tensor=True))
    idx = torch.tensor([list(corpus).index(i) for i in ids])
    assert torch.allclose(st_docs, corpus_embeddings[idx], atol=2e-5)

    ks = [1, 3, 5, 10, 100]
    ev = InformationRetrievalEvaluator(
        queries=queries,
        corpus={did: document_text(doc) for did, doc in corpus.items()},
        relevant_docs={q: set(d) for q, d in qrels.items()},
        mrr_at_k=ks,
        ndcg_at_k=ks,
        accuracy_at_k=ks,
        precision_recall_at_k=ks,
        map_at_k=ks,
        batch_size=32,
        score_functions={"cosine": cos_sim},
    )
    # sentence-transformers' own search and metrics, over our corpus embeddings and its query embeddings.
    scores = ev.compute_all_metrics(st, corpus_embeddings=corpus_embeddings)["cosine"]
    for metric in ("ndcg", "mrr", "recall", "precision", "accuracy", "map"):
        for k in ks:
            assert ours[f"{metric}@{k}"] == pytest.approx(float(scores[f"{metric}@k"][k]), abs=1e-4), (
                metric,
                k,
            )

    # The evaluator object gives the same figures, prefixed.
    evaluator = RetrievalEvaluator(corpus, queries, qrels, name="scifact")
    figures = {
        f"scifact_{k}": v
        for k, v in evaluator.evaluate(minilm, corpus_embeddings=corpus_embeddings).items()
        if "@" in k
    }
    assert figures["scifact_ndcg@10"] == pytest.approx(ours["ndcg@10"], abs=1e-9)
    assert evaluator.primary_metric == "scifact_ndcg@10"
