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

# -- relation extraction --
# isort: split
from hf_contrastive.evaluation.relation import (  # noqa: E402, F401
    episode_accuracy,
    relation_micro_f1,
    relation_scores,
    semeval2010_official_scores,
)

# -- faithful summarisation --
# isort: split
from hf_contrastive.evaluation.faithfulness import (  # noqa: E402, F401
    SpanMatchJudge,
    annotator_judge,
    evaluate_faithfulness,
    generate_summaries,
    hallucination_rate,
    span_log_probs,
    summary_perplexity,
)
