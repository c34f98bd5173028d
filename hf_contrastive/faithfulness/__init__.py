"""Faithful summarisation: span data and annotators, the span-level unlikelihood trainer, task-vector
arithmetic (negation of a hallucination adapter) and faithfulness evaluation."""

from hf_contrastive.faithfulness.annotation import (
    LLMJudgeAnnotator,
    PerturbationAnnotator,
    SpanAnnotation,
    SpanAnnotator,
    load_summary_splits,
)
from hf_contrastive.faithfulness.arithmetic import LoraTaskVector, TaskVector, select_negation_scale
from hf_contrastive.faithfulness.evaluation import (
    SpanMatchJudge,
    annotator_judge,
    evaluate_faithfulness,
    generate_summaries,
    hallucination_rate,
    span_log_probs,
    summary_perplexity,
)
from hf_contrastive.faithfulness.losses import SpanUnlikelihoodLoss
from hf_contrastive.faithfulness.spans import (
    UNFAITHFUL_MASK,
    SpanDataCollator,
    SpanExample,
    SpanFeatureBuilder,
    build_summary_prompt,
    token_span_mask,
)
from hf_contrastive.faithfulness.trainer import SpanUnlikelihoodConfig, SpanUnlikelihoodTrainer

__all__ = [
    "UNFAITHFUL_MASK",
    "LLMJudgeAnnotator",
    "LoraTaskVector",
    "PerturbationAnnotator",
    "SpanAnnotation",
    "SpanAnnotator",
    "SpanDataCollator",
    "SpanExample",
    "SpanFeatureBuilder",
    "SpanMatchJudge",
    "SpanUnlikelihoodConfig",
    "SpanUnlikelihoodLoss",
    "SpanUnlikelihoodTrainer",
    "TaskVector",
    "annotator_judge",
    "build_summary_prompt",
    "evaluate_faithfulness",
    "generate_summaries",
    "hallucination_rate",
    "load_summary_splits",
    "select_negation_scale",
    "span_log_probs",
    "summary_perplexity",
    "token_span_mask",
]
