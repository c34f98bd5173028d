"""Text2Token (An et al. 2025): unsupervised sentence embeddings by token target prediction.

The pooled representation of a text is projected onto the vocabulary (the LM head, or the tied input embedding
matrix of an encoder without one) and trained with the KL divergence to a target token distribution: first
data-driven targets (the text's tf-idf weighted tokens, [`tfidf_targets`]), then model-derived targets (the tokens
the stage-1 model associates with the text, [`model_derived_targets`]). [`Text2TokenTrainer`] trains a
`SentenceEncoder` on them; the recipe task `text2token` runs both stages.

Importing this package registers the loss name `text2token` (`ContrastiveConfig(loss="text2token")`, layout
`token_targets`).
"""

from hf_contrastive.embeddings.text2token.losses import (
    TEXT2TOKEN_CITATION,
    TOKEN_TARGETS_LAYOUT,
    Text2TokenLoss,
)
from hf_contrastive.embeddings.text2token.projection import VocabularyProjection, unwrap_encoder
from hf_contrastive.embeddings.text2token.targets import (
    ENGLISH_STOP_WORDS,
    MODEL_TARGET_SOURCES,
    TokenTarget,
    check_token_targets,
    mix_targets,
    model_derived_targets,
    stop_token_ids,
    tfidf_targets,
    token_target_dataset,
)
from hf_contrastive.embeddings.text2token.trainer import (
    Text2TokenCollator,
    Text2TokenConfig,
    Text2TokenTrainer,
)

__all__ = [
    "ENGLISH_STOP_WORDS",
    "MODEL_TARGET_SOURCES",
    "TEXT2TOKEN_CITATION",
    "TOKEN_TARGETS_LAYOUT",
    "Text2TokenCollator",
    "Text2TokenConfig",
    "Text2TokenLoss",
    "Text2TokenTrainer",
    "TokenTarget",
    "VocabularyProjection",
    "check_token_targets",
    "mix_targets",
    "model_derived_targets",
    "stop_token_ids",
    "tfidf_targets",
    "token_target_dataset",
    "unwrap_encoder",
]
