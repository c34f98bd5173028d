"""Relation extraction: data loaders and K-shot sampling, the entity-marker processor, the
`RelationClassifier` head, TKRE pretraining (masked span LM + span-level contrast), knowledge
generation and the official SemEval-2010 scorer.

Importing this wing registers `RelationClassifierConfig` / `RelationClassifier` / `RelationProcessor` with
the Auto classes.
"""

from hf_contrastive.core.configuration import register_auto_classes
from hf_contrastive.relation.configuration import RelationClassifierConfig
from hf_contrastive.relation.data import (
    SEMEVAL_LABELS,
    Episode,
    RelationDataCollator,
    RelationDataset,
    RelationExample,
    load_fewrel,
    load_semeval2010,
    sample_episodes,
    sample_k_shot,
)
from hf_contrastive.relation.knowledge import KnowledgeGenerator, ValidationReport
from hf_contrastive.relation.losses import SpanContrastiveLoss
from hf_contrastive.relation.modeling import (
    RelationClassificationHead,
    RelationClassifier,
    RelationClassifierOutput,
)
from hf_contrastive.relation.mslm import MaskedSpanLMCollator
from hf_contrastive.relation.processing import RelationProcessor
from hf_contrastive.relation.scoring import (
    episode_accuracy,
    relation_micro_f1,
    relation_scores,
    semeval2010_official_scores,
)
from hf_contrastive.relation.tkre import TKREConfig, TKREPretrainer
from hf_contrastive.relation.trainer import RelationClassificationTrainer, RelationFinetuneConfig

register_auto_classes(RelationClassifierConfig, RelationClassifier, RelationProcessor)

__all__ = [
    "SEMEVAL_LABELS",
    "Episode",
    "KnowledgeGenerator",
    "MaskedSpanLMCollator",
    "RelationClassificationHead",
    "RelationClassificationTrainer",
    "RelationClassifier",
    "RelationClassifierConfig",
    "RelationClassifierOutput",
    "RelationDataCollator",
    "RelationDataset",
    "RelationExample",
    "RelationFinetuneConfig",
    "RelationProcessor",
    "SpanContrastiveLoss",
    "TKREConfig",
    "TKREPretrainer",
    "ValidationReport",
    "episode_accuracy",
    "load_fewrel",
    "load_semeval2010",
    "relation_micro_f1",
    "relation_scores",
    "sample_episodes",
    "sample_k_shot",
    "semeval2010_official_scores",
]
