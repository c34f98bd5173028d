"""Sentence embeddings: the `SentenceEncoder` head, pooling, foreign-checkpoint loading,
`ContrastiveTrainer` (SimCSE and successors) and STS evaluation.

Importing this wing registers `SentenceEncoderConfig` / `SentenceEncoder` with `AutoConfig` /
`AutoModel`.
"""

from hf_contrastive.core.configuration import register_auto_classes
from hf_contrastive.embeddings.configuration import POOLING_MODES, SentenceEncoderConfig
from hf_contrastive.embeddings.modeling import (
    ProjectionHead,
    SentenceEncoder,
    SentenceEncoderOutput,
    SentenceEncoderPreTrainedModel,
)
from hf_contrastive.embeddings.pooling import pool
from hf_contrastive.embeddings.sts import (
    SIMILARITIES,
    STSEvaluator,
    STSExample,
    aggregate_senteval,
    evaluate_sts,
    load_sts_benchmark,
    pair_similarities,
)
from hf_contrastive.embeddings.trainer import ContrastiveConfig, ContrastiveTrainer

register_auto_classes(SentenceEncoderConfig, SentenceEncoder)

__all__ = [
    "POOLING_MODES",
    "SIMILARITIES",
    "ContrastiveConfig",
    "ContrastiveTrainer",
    "ProjectionHead",
    "STSEvaluator",
    "STSExample",
    "SentenceEncoder",
    "SentenceEncoderConfig",
    "SentenceEncoderOutput",
    "SentenceEncoderPreTrainedModel",
    "aggregate_senteval",
    "evaluate_sts",
    "load_sts_benchmark",
    "pair_similarities",
    "pool",
]
