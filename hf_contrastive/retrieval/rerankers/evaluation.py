"""Reranking a retriever's results and scoring them with the retrieval metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hf_contrastive.retrieval.evaluation import DEFAULT_K_VALUES, document_text, retrieval_metrics


def rerank_results(
    reranker: Any,
    results: Mapping[str, Sequence[Any]],
    corpus: Mapping[str, Any],
    queries: Mapping[str, str],
    *,
    top_k: int = 100,
    batch_size: int = 32,
    show_progress_bar: bool = False,
) -> dict[str, list[tuple[str, float]]]:
    """Rescore each query's first `top_k` retrieved documents with `reranker.predict`.

    Args:
        results (`Mapping[str, Sequence[Any]]`): `{query_id: [doc_id or (doc_id, score), ...]}` ranked by the retriever (the
            `results` of `evaluate_retrieval(..., return_results=True)`).
        corpus / queries: the BEIR triple's documents (`title + " " + text`) and query texts.
    Returns:
        `{query_id: [(doc_id, reranker score), ...]}` sorted by the reranker's score (ties by id).
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}.")
    pairs, owners = [], []
    for qid, hits in results.items():
        if qid not in queries:
            raise ValueError(f"Query id {qid!r} of the results is not in queries.")
        for hit in list(hits)[:top_k]:
            did = hit[0] if isinstance(hit, (tuple, list)) else hit
            if did not in corpus:
                raise ValueError(f"Document id {did!r} of the results is not in the corpus.")
            pairs.append((queries[qid], document_text(corpus[did])))
            owners.append((qid, did))
    scores = reranker.predict(pairs, batch_size=batch_size, show_progress_bar=show_progress_bar).tolist()
    out: dict[str, list[tuple[str, float]]] = {qid: [] for qid in results}
    for (qid, did), s in zip(owners, scores):
        out[qid].append((did, float(s)))
    for hits in out.values():
        hits.sort(key=lambda x: (-x[1], x[0]))
    return out


def evaluate_reranking(
    reranker: Any,
    results: Mapping[str, Sequence[Any]],
    corpus: Mapping[str, Any],
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    top_k: int = 100,
    k_values: Sequence[int] = DEFAULT_K_VALUES,
    batch_size: int = 32,
    show_progress_bar: bool = False,
) -> dict[str, float]:
    """Retrieval metrics (`ndcg@10`, `mrr@10`, ...) after reranking the retriever's top `top_k`.

    Documents the retriever did not return stay unretrieved, so recall@k for k >= top_k equals
    the retriever's.
    """
    reranked = rerank_results(
        reranker,
        results,
        corpus,
        queries,
        top_k=top_k,
        batch_size=batch_size,
        show_progress_bar=show_progress_bar,
    )
    return retrieval_metrics({q: [d for d, _ in h] for q, h in reranked.items()}, qrels, k_values)


__all__ = ["evaluate_reranking", "rerank_results"]
