"""Dense retrieval evaluation on a BEIR-layout triple (corpus, queries, qrels).

Exact search: queries and documents are embedded, scored in corpus chunks of `chunk_size`
(so memory is bounded by `num_queries x chunk_size` scores), and each query keeps its top
`max(k_values)` documents. The metrics follow sentence-transformers'
`InformationRetrievalEvaluator` (and with binary relevance, BEIR's `pytrec_eval`
figures for nDCG, recall and MRR):

- `ndcg@k`: DCG with gain = relevance grade (trec_eval's linear gain) and discount
  `1 / log2(rank + 1)`, divided by the DCG of the ideal ranking of the judged documents.
- `mrr@k`: reciprocal rank of the first relevant document within the top k (0 if none).
- `recall@k`: relevant documents in the top k / all relevant documents of the query.
- `precision@k`: relevant documents in the top k / k.
- `accuracy@k`: 1 if any relevant document is in the top k (also called hit rate / success@k).
- `map@k`: sum of precision@rank over relevant ranks <= k, divided by
  `min(k, number of relevant documents)` (sentence-transformers' convention).

Every metric is the mean over the evaluated queries: those with at least one relevant
(grade > 0) judgement. Ties in score are broken by ascending document id, as in
sentence-transformers. Documents are embedded as `(title + " " + text).strip()` (BEIR's and
MTEB's join), or `text` alone when there is no title.

Data: `load_beir` reads a BEIR folder (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`)
or the SciFact CSV release of the benchmark data folder (the BEIR test split is the 300 claims
of `claims_validation.csv` that cite documents; `split="train"` reads `claims_train.csv`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from hf_contrastive.core.data.benchmarks import Corpus, Qrels, Queries, load_beir
from hf_contrastive.core.search import (
    SCORE_FUNCTIONS,
    check_embeddings,
    document_text,
    encode_texts,
    exact_search,
)

logger = logging.getLogger(__name__)

METRICS = ("ndcg", "mrr", "recall", "precision", "accuracy", "map")
DEFAULT_K_VALUES = (1, 3, 5, 10, 100)


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------
def _dcg(gains: Sequence[float]) -> float:
    return sum(g / math.log2(r + 2) for r, g in enumerate(gains))


def retrieval_metrics(
    results: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, int]],
    k_values: Sequence[int] = DEFAULT_K_VALUES,
) -> dict[str, float]:
    """Ranking metrics of ranked document ids against graded judgements.

    Args:
        results (`Mapping[str, Sequence[str]]`): `{query_id: [doc_id, ...]}` ranked best first (at least `max(k_values)` long
            where the corpus allows).
        qrels (`Mapping[str, Mapping[str, int]]`): `{query_id: {doc_id: grade}}`; grades > 0 are relevant.
        k_values (`Sequence[int]`, *optional*, defaults to `DEFAULT_K_VALUES`): cut-offs.
    Returns:
        `{f"{metric}@{k}": mean over queries}` for metric in `ndcg`, `mrr`, `recall`,
        `precision`, `accuracy`, `map` (see the module docstring for the definitions).
        Queries without a relevant judgement are not evaluated; a query with judgements but no
        ranking counts as all zeros.
    """
    ks = _check_k_values(k_values)
    sums = {f"{m}@{k}": 0.0 for m in METRICS for k in ks}
    n = 0
    for qid, judged in qrels.items():
        relevant = {d: g for d, g in judged.items() if g > 0}
        if not relevant:
            continue
        n += 1
        ranked = list(results.get(qid, ()))
        ideal = sorted(relevant.values(), reverse=True)
        for k in ks:
            top = ranked[:k]
            hit_ranks = [r for r, d in enumerate(top) if d in relevant]
            found = len(hit_ranks)
            sums[f"recall@{k}"] += found / len(relevant)
            sums[f"precision@{k}"] += found / k
            sums[f"accuracy@{k}"] += 1.0 if found else 0.0
            sums[f"mrr@{k}"] += 1.0 / (hit_ranks[0] + 1) if found else 0.0
            idcg = _dcg(ideal[:k])
            sums[f"ndcg@{k}"] += _dcg([relevant.get(d, 0) for d in top]) / idcg
            ap = sum((i + 1) / (r + 1) for i, r in enumerate(hit_ranks))
            sums[f"map@{k}"] += ap / min(k, len(relevant))
    if n == 0:
        raise ValueError("No query has a relevant (grade > 0) judgement in qrels: nothing to evaluate.")
    return {key: value / n for key, value in sums.items()}


def _check_k_values(k_values: Sequence[int]) -> list[int]:
    ks = sorted({int(k) for k in k_values})
    if not ks or ks[0] < 1 or any(int(k) != k for k in k_values):
        raise ValueError(f"k_values must be positive integers, got {list(k_values)!r}.")
    return ks


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------
def _validate_triple(corpus: Any, queries: Any, qrels: Any) -> tuple[Corpus, Queries, Qrels, dict[str, int]]:
    if not isinstance(corpus, Mapping):
        raise TypeError(
            f"corpus must be a dict {{doc_id: {{'title', 'text'}} or text}}, got {type(corpus).__name__}."
        )
    if not isinstance(queries, Mapping):
        raise TypeError(f"queries must be a dict {{query_id: text}}, got {type(queries).__name__}.")
    if not isinstance(qrels, Mapping):
        raise TypeError(f"qrels must be a dict {{query_id: {{doc_id: grade}}}}, got {type(qrels).__name__}.")
    if len(corpus) == 0:
        raise ValueError("The corpus is empty: retrieval needs at least one document.")
    corpus = {str(k): v for k, v in corpus.items()}
    queries = {str(k): v for k, v in queries.items()}
    qrels = {str(q): {str(d): int(g) for d, g in docs.items()} for q, docs in qrels.items()}
    unknown_queries = [q for q in qrels if q not in queries]
    unknown_docs = sum(1 for docs in qrels.values() for d in docs if d not in corpus)
    if unknown_queries or unknown_docs:
        logger.warning(
            "qrels name %d query id(s) absent from the queries (skipped) and %d judgement(s) of documents "
            "absent from the corpus (kept: they count as relevant documents never retrieved).",
            len(unknown_queries),
            unknown_docs,
        )
    counts = {"unknown_qrels_queries": len(unknown_queries), "unknown_qrels_documents": unknown_docs}
    qrels = {q: docs for q, docs in qrels.items() if q in queries}
    return corpus, queries, qrels, counts


def evaluate_retrieval(
    model: Any,
    corpus: Mapping[str, Any],
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    batch_size: int = 32,
    chunk_size: int = 50_000,
    k_values: Sequence[int] = DEFAULT_K_VALUES,
    score_function: str = "cos_sim",
    query_prompt: str | None = None,
    document_prompt: str | None = None,
    show_progress_bar: bool = False,
    corpus_embeddings: torch.Tensor | None = None,
    return_results: bool = False,
) -> dict[str, Any]:
    """Embed queries and corpus with `model` and score exact top-k retrieval against `qrels`.

    Args:
        model (`Any`): anything with `encode(texts, batch_size=..., ...)` returning `[N, D]` (a
            [`SentenceEncoder`], a sentence-transformers model); `encode_queries` /
            `encode_documents` are used when the model has them.
        corpus (`Mapping[str, Any]`): `{doc_id: {"title": ..., "text": ...}}` (or `{doc_id: text}`).
        queries (`Mapping[str, str]`): `{query_id: text}`. Only queries with a relevant judgement are embedded.
        qrels (`Mapping[str, Mapping[str, int]]`): `{query_id: {doc_id: grade}}`; grade > 0 is relevant (graded gains in nDCG).
        batch_size (`int`, *optional*, defaults to `32`): texts per forward pass. chunk_size: documents scored at once.
        k_values (`Sequence[int]`, *optional*, defaults to `DEFAULT_K_VALUES`): cut-offs; the search keeps `max(k_values)` documents per query.
        score_function (`str`, *optional*, defaults to `"cos_sim"`): `"cos_sim"` (default) or `"dot"`.
        query_prompt / document_prompt: text prepended to queries / documents (passed to the
            model as `prompt=` where it takes one).
        corpus_embeddings (`torch.Tensor | None`, *optional*): precomputed `[N, D]` document embeddings in `corpus` order (skips
            embedding the corpus).
        return_results (`bool`, *optional*, defaults to `False`): also return `results` `{query_id: [(doc_id, score), ...]}`.
    Returns:
        `ndcg@k`, `mrr@k`, `recall@k`, `precision@k`, `accuracy@k`, `map@k` for every
        k, plus `num_queries`, `num_documents`, `unknown_qrels_queries` (qrels query ids not
        in `queries`: skipped) and `unknown_qrels_documents` (judgements of documents not in
        the corpus: kept as relevant but unretrievable, as trec_eval does).
    Raises:
        `ValueError`: when the query or document embeddings hold NaN / infinite values, or all-zero rows
            with `score_function="cos_sim"` (every score would tie; the error names the rows and ids).
    """
    corpus, queries, qrels, counts = _validate_triple(corpus, queries, qrels)
    ks = _check_k_values(k_values)
    qids = [q for q in queries if any(g > 0 for g in qrels.get(q, {}).values())]
    if not qids:
        raise ValueError("No query has a relevant (grade > 0) judgement in qrels: nothing to evaluate.")
    doc_ids = list(corpus)
    q_emb = encode_texts(
        model,
        [queries[q] for q in qids],
        role="queries",
        batch_size=batch_size,
        prompt=query_prompt,
        show_progress_bar=show_progress_bar,
    )
    if corpus_embeddings is None:
        d_emb = encode_corpus(
            model,
            corpus,
            batch_size=batch_size,
            document_prompt=document_prompt,
            show_progress_bar=show_progress_bar,
        )
    else:
        d_emb = torch.as_tensor(corpus_embeddings).float()
        if d_emb.shape[0] != len(doc_ids):
            raise ValueError(f"corpus_embeddings has {d_emb.shape[0]} rows for {len(doc_ids)} documents.")
    # NaN or all-zero rows tie every score; the id tie-break would then fake a ranking (even nDCG = 1).
    cosine = score_function == "cos_sim"
    check_embeddings(q_emb, qids, what="queries", refuse_zero=cosine)
    check_embeddings(d_emb, doc_ids, what="documents", refuse_zero=cosine)
    hits = exact_search(q_emb, d_emb, doc_ids, max(ks), score_function=score_function, chunk_size=chunk_size)
    results = dict(zip(qids, hits))
    metrics: dict[str, Any] = retrieval_metrics(
        {q: [d for d, _ in h] for q, h in results.items()}, {q: qrels[q] for q in qids}, ks
    )
    metrics.update(num_queries=len(qids), num_documents=len(doc_ids), **counts)
    if return_results:
        metrics["results"] = results
    return metrics


def encode_corpus(
    model: Any,
    corpus: Mapping[str, Any],
    *,
    batch_size: int = 32,
    document_prompt: str | None = None,
    show_progress_bar: bool = False,
) -> torch.Tensor:
    """`[N, D]` embeddings of the corpus documents, in the corpus's order (see `document_text`)."""
    if len(corpus) == 0:
        raise ValueError("The corpus is empty: retrieval needs at least one document.")
    return encode_texts(
        model,
        [document_text(doc) for doc in corpus.values()],
        role="documents",
        batch_size=batch_size,
        prompt=document_prompt,
        show_progress_bar=show_progress_bar,
    )


class RetrievalEvaluator:
    """Reusable retrieval evaluation with a metric prefix, standalone or during training.

    `RetrievalEvaluator(corpus, queries, qrels, name="scifact")(model)` returns
    `{"scifact_ndcg@10": ..., "scifact_mrr@10": ..., ...}` (the same contract as
    [`STSEvaluator`]); `compute(model)` returns the same figures prefixed `eval_` for
    `Trainer` logs; `callback()` gives a `TrainerCallback` that adds them to the metrics of
    every `Trainer.evaluate` call.

    Args:
        corpus / queries / qrels: a BEIR triple (see `load_beir`).
        name (`str`, *optional*, defaults to `"retrieval"`): metric prefix. main_metric: the figure reported first and named by `primary_metric`
            (default `ndcg@10`, or nDCG at the largest cut-off when 10 is not among `k_values`).
        Other keyword arguments go to `evaluate_retrieval`.
    """

    def __init__(
        self,
        corpus: Mapping[str, Any],
        queries: Mapping[str, str],
        qrels: Mapping[str, Mapping[str, int]],
        *,
        name: str = "retrieval",
        main_metric: str | None = None,
        batch_size: int = 32,
        chunk_size: int = 50_000,
        k_values: Sequence[int] = DEFAULT_K_VALUES,
        score_function: str = "cos_sim",
        query_prompt: str | None = None,
        document_prompt: str | None = None,
        show_progress_bar: bool = False,
        dataset_name: str | None = None,
        dataset_type: str | None = None,
        split: str | None = None,
    ) -> None:
        self.corpus, self.queries, self.qrels, self.qrels_counts = _validate_triple(corpus, queries, qrels)
        self.k_values = tuple(_check_k_values(k_values))
        if main_metric is None:
            main_metric = f"ndcg@{10 if 10 in self.k_values else max(self.k_values)}"
        metric, _, k = main_metric.partition("@")
        if metric not in METRICS or not k.isdigit() or int(k) not in self.k_values:
            raise ValueError(
                f"main_metric must be '<metric>@<k>' with metric in {METRICS} and k in {self.k_values}, "
                f"got {main_metric!r}."
            )
        if score_function not in SCORE_FUNCTIONS:
            raise ValueError(f"score_function must be one of {SCORE_FUNCTIONS}, got {score_function!r}.")
        self.name = name
        self.main_metric = main_metric
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.score_function = score_function
        self.query_prompt = query_prompt
        self.document_prompt = document_prompt
        self.show_progress_bar = show_progress_bar
        self.dataset_name = dataset_name or name
        self.dataset_type = dataset_type or name
        self.split = split

    @classmethod
    def from_beir(
        cls, folder_or_name: str | os.PathLike = "scifact", split: str = "test", **kwargs: Any
    ) -> RetrievalEvaluator:
        """An evaluator over `load_beir(folder_or_name, split)`; the name defaults to the folder's."""
        corpus, queries, qrels = load_beir(folder_or_name, split)
        name = Path(folder_or_name).name
        kwargs.setdefault("name", name)
        kwargs.setdefault("dataset_name", name)
        kwargs.setdefault("dataset_type", f"BeIR/{name}" if name == "scifact" else name)
        kwargs.setdefault("split", split)
        return cls(corpus, queries, qrels, **kwargs)

    @property
    def primary_metric(self) -> str:
        return f"{self.name}_{self.main_metric}"

    def __len__(self) -> int:
        return sum(1 for q in self.queries if any(g > 0 for g in self.qrels.get(q, {}).values()))

    def evaluate(self, model: Any, **overrides: Any) -> dict[str, Any]:
        """Unprefixed `evaluate_retrieval` result for `model`."""
        kwargs = dict(
            batch_size=self.batch_size,
            chunk_size=self.chunk_size,
            k_values=self.k_values,
            score_function=self.score_function,
            query_prompt=self.query_prompt,
            document_prompt=self.document_prompt,
            show_progress_bar=self.show_progress_bar,
        )
        kwargs.update(overrides)
        return evaluate_retrieval(model, self.corpus, self.queries, self.qrels, **kwargs)

    def __call__(self, model: Any) -> dict[str, float]:
        res = self.evaluate(model)
        out = {f"{self.name}_{self.main_metric}": float(res[self.main_metric])}
        for key, value in res.items():
            if "@" in key and key != self.main_metric:
                out[f"{self.name}_{key}"] = float(value)
        return out

    def compute(self, model: Any, metric_key_prefix: str = "eval") -> dict[str, float]:
        """`__call__`'s figures prefixed `{metric_key_prefix}_` (`eval_retrieval_ndcg@10`)."""
        return {f"{metric_key_prefix}_{k}": v for k, v in self(model).items()}

    def callback(self, metric_key_prefix: str = "eval") -> RetrievalEvaluatorCallback:
        """A `TrainerCallback` running this evaluator at each `Trainer.evaluate`."""
        return RetrievalEvaluatorCallback(self, metric_key_prefix=metric_key_prefix)


class RetrievalEvaluatorCallback(TrainerCallback):
    """Adds a [`RetrievalEvaluator`]'s figures to the metrics of every `Trainer.evaluate`.

    `Trainer(..., callbacks=[evaluator.callback()])`: when an evaluation runs (at the
    `eval_strategy` schedule, or an explicit `trainer.evaluate()`), the model being trained
    (PEFT/DDP wrappers are looked through) is evaluated and `eval_<name>_<metric>` figures are
    added to the returned metrics, so `metric_for_best_model="eval_<name>_ndcg@10"` works, and
    they are appended to `state.log_history`. Only the main process evaluates.

    The callback runs when the trainer evaluates; with [`ContrastiveTrainer`] that needs an
    `eval_dataset` or an `sts_evaluator` (otherwise `evaluate()` has nothing of its own to
    run and refuses). Without either, call `evaluator.compute(model)` directly.
    """

    def __init__(self, evaluator: RetrievalEvaluator, metric_key_prefix: str = "eval") -> None:
        if not isinstance(evaluator, RetrievalEvaluator):
            raise TypeError(f"Expected a RetrievalEvaluator, got {type(evaluator).__name__}.")
        self.evaluator = evaluator
        self.metric_key_prefix = metric_key_prefix
        self.last_metrics: dict[str, float] = {}

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        if model is None or not state.is_world_process_zero:
            return control
        encoder = getattr(model, "module", model)
        was_training = encoder.training
        try:
            figures = self.evaluator.compute(encoder, self.metric_key_prefix)
        finally:
            encoder.train(was_training)
        self.last_metrics = figures
        if metrics is not None:
            metrics.update(figures)
        state.log_history.append({**figures, "epoch": state.epoch, "step": state.global_step})
        logger.info("Retrieval evaluation: %s", {k: round(v, 4) for k, v in figures.items()})
        return control


__all__ = [
    "METRICS",
    "RetrievalEvaluator",
    "RetrievalEvaluatorCallback",
    "document_text",
    "encode_corpus",
    "evaluate_retrieval",
    "exact_search",
    "load_beir",
    "retrieval_metrics",
]
