"""Rerankers: a cross-encoder and an LLM yes/no reranker, their losses, trainer and evaluation.

Importing this package registers both heads with `AutoConfig` / `AutoModel`.
"""

from hf_contrastive.core.configuration import register_auto_classes
from hf_contrastive.retrieval.rerankers.configuration import (
    DEFAULT_LLM_PROMPT,
    CrossEncoderRerankerConfig,
    LLMYesNoRerankerConfig,
)
from hf_contrastive.retrieval.rerankers.evaluation import evaluate_reranking, rerank_results
from hf_contrastive.retrieval.rerankers.losses import (
    ListwiseInfoNCELoss,
    PointwiseBCELoss,
    YesNoSFTLoss,
    listwise_infonce_loss,
    pointwise_bce_loss,
    yes_no_sft_loss,
)
from hf_contrastive.retrieval.rerankers.modeling import CrossEncoderReranker, LLMYesNoReranker, RerankerOutput
from hf_contrastive.retrieval.rerankers.trainer import (
    RerankerCollator,
    RerankerConfig,
    RerankerTrainer,
    load_reranker,
    resolve_reranker_columns,
)

register_auto_classes(CrossEncoderRerankerConfig, CrossEncoderReranker)
register_auto_classes(LLMYesNoRerankerConfig, LLMYesNoReranker)

__all__ = [
    "DEFAULT_LLM_PROMPT",
    "CrossEncoderReranker",
    "CrossEncoderRerankerConfig",
    "LLMYesNoReranker",
    "LLMYesNoRerankerConfig",
    "ListwiseInfoNCELoss",
    "PointwiseBCELoss",
    "RerankerCollator",
    "RerankerConfig",
    "RerankerOutput",
    "RerankerTrainer",
    "YesNoSFTLoss",
    "evaluate_reranking",
    "listwise_infonce_loss",
    "load_reranker",
    "pointwise_bce_loss",
    "rerank_results",
    "resolve_reranker_columns",
    "yes_no_sft_loss",
]
