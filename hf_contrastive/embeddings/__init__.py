"""Sentence embeddings: the `SentenceEncoder` head, pooling, foreign-checkpoint loading,
`ContrastiveTrainer` (SimCSE and successors) and STS evaluation.

Importing this wing registers `SentenceEncoderConfig` / `SentenceEncoder` with `AutoConfig` /
`AutoModel`.
"""

from hf_contrastive.core.configuration import register_auto_classes
from hf_contrastive.embeddings.configuration import POOLING_MODES, SentenceEncoderConfig
from hf_contrastive.embeddings.debcse import (
    CandidatePool,
    DebiasedPairSampler,
    DebiasedSample,
    PropensityTable,
)
from hf_contrastive.embeddings.dse import (
    DistilledPairScorer,
    DSEConfig,
    DSELoss,
    DSETrainer,
    DSETrainingArguments,
    TeacherCacheMismatchError,
    cached_teacher_logits,
)
from hf_contrastive.embeddings.geometry import AlignmentUniformityEvaluator, alignment, uniformity
from hf_contrastive.embeddings.modeling import (
    ProjectionHead,
    SentenceEncoder,
    SentenceEncoderOutput,
    SentenceEncoderPreTrainedModel,
)
from hf_contrastive.embeddings.moe import (
    DomainPairEvaluator,
    MoESentenceEncoder,
    MoESentenceEncoderConfig,
    best_f1_threshold,
    evaluate_domain_pairs,
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
from hf_contrastive.embeddings.synthesis import MultiCSRData, MultiCSRDataBuilder, SynthesisReport
from hf_contrastive.embeddings.text2token import (
    Text2TokenConfig,
    Text2TokenLoss,
    Text2TokenTrainer,
    TokenTarget,
    VocabularyProjection,
    mix_targets,
    model_derived_targets,
    tfidf_targets,
    token_target_dataset,
)
from hf_contrastive.embeddings.trainer import ContrastiveConfig, ContrastiveTrainer
from hf_contrastive.embeddings.whitening import (
    ShuffledGroupWhitening,
    WhitenedCSELoss,
    group_whiten,
    zca_whitening_matrix,
)

register_auto_classes(SentenceEncoderConfig, SentenceEncoder)

__all__ = [
    "DomainPairEvaluator",
    "MoESentenceEncoder",
    "MoESentenceEncoderConfig",
    "best_f1_threshold",
    "evaluate_domain_pairs",
    "AlignmentUniformityEvaluator",
    "alignment",
    "uniformity",
    "CandidatePool",
    "DebiasedPairSampler",
    "DebiasedSample",
    "DistilledPairScorer",
    "DSEConfig",
    "DSELoss",
    "DSETrainer",
    "DSETrainingArguments",
    "TeacherCacheMismatchError",
    "cached_teacher_logits",
    "MultiCSRData",
    "MultiCSRDataBuilder",
    "PropensityTable",
    "ShuffledGroupWhitening",
    "SynthesisReport",
    "Text2TokenConfig",
    "Text2TokenLoss",
    "Text2TokenTrainer",
    "TokenTarget",
    "VocabularyProjection",
    "WhitenedCSELoss",
    "group_whiten",
    "mix_targets",
    "model_derived_targets",
    "tfidf_targets",
    "token_target_dataset",
    "zca_whitening_matrix",
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
