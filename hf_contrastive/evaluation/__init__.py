"""Evaluation: STS, decoding quality (and later retrieval, classification)."""

from hf_contrastive.evaluation.decoding import *  # noqa: F403
from hf_contrastive.evaluation.retrieval import (
    RetrievalEvaluator,
    RetrievalEvaluatorCallback,
    evaluate_retrieval,
    exact_search,
    load_beir,
    retrieval_metrics,
)
from hf_contrastive.evaluation.sts import (
    SIMILARITIES,
    STSEvaluator,
    STSExample,
    aggregate_senteval,
    evaluate_sts,
    load_sts_benchmark,
    pair_similarities,
)
