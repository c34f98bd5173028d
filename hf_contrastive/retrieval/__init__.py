"""Retrieval: the `BiEncoder`, pair builders for unsupervised pre-training, hard-negative mining,
rerankers and BEIR-style evaluation. Momentum contrast and GradCache are core losses
(`loss="moco"`, `gradcache_mini_batch_size=`) that `ContrastiveTrainer` runs for this wing.

Importing this wing registers `BiEncoderConfig` / `BiEncoder` (and the rerankers) with the Auto classes.
"""

from hf_contrastive.core.configuration import register_auto_classes
from hf_contrastive.retrieval.augment import (
    context_window_pairs,
    inverse_cloze_pairs,
    random_crop,
    random_crop_pairs,
    split_sentences,
    word_deletion,
)
from hf_contrastive.retrieval.bi_encoder import BiEncoder, BiEncoderConfig
from hf_contrastive.retrieval.evaluation import (
    RetrievalEvaluator,
    RetrievalEvaluatorCallback,
    evaluate_retrieval,
    load_beir,
    retrieval_metrics,
)
from hf_contrastive.retrieval.mining import mine_hard_negatives
from hf_contrastive.retrieval.rerankers import (
    CrossEncoderReranker,
    LLMYesNoReranker,
    RerankerConfig,
    RerankerTrainer,
    evaluate_reranking,
)

register_auto_classes(BiEncoderConfig, BiEncoder)

__all__ = [
    "BiEncoder",
    "BiEncoderConfig",
    "CrossEncoderReranker",
    "LLMYesNoReranker",
    "RerankerConfig",
    "RerankerTrainer",
    "RetrievalEvaluator",
    "RetrievalEvaluatorCallback",
    "context_window_pairs",
    "evaluate_reranking",
    "evaluate_retrieval",
    "inverse_cloze_pairs",
    "load_beir",
    "mine_hard_negatives",
    "random_crop",
    "random_crop_pairs",
    "retrieval_metrics",
    "split_sentences",
    "word_deletion",
]
