"""Mixture-of-experts sentence embeddings with domain-forced routing (Hallee et al. 2024).

`MoESentenceEncoder.from_dense(model, domains=[...])` splits the MLPs of a dense [`SentenceEncoder`] into one
expert per domain; `ContrastiveTrainer` with `ContrastiveConfig(domain_column="domain")` trains it (each row
routed by its domain); `evaluate_domain_pairs` reports F1 at the best cosine threshold per domain and over all
domains, the threshold chosen on a dev split. Importing this module registers the head with `AutoConfig` /
`AutoModel`.
"""

from hf_contrastive.core.configuration import register_auto_classes
from hf_contrastive.embeddings.moe.configuration import MoESentenceEncoderConfig
from hf_contrastive.embeddings.moe.data import DomainPair, domain_pair_splits, positive_pairs
from hf_contrastive.embeddings.moe.evaluation import (
    DomainPairEvaluator,
    PairF1,
    best_f1_threshold,
    evaluate_domain_pairs,
    f1_at_threshold,
)
from hf_contrastive.embeddings.moe.modeling import (
    EXPERT_LAYOUTS,
    MOE_CITATION,
    ExpertLayout,
    ExpertRouter,
    MoESentenceEncoder,
    RoutedLinear,
    convert_to_experts,
    find_expert_layout,
)

register_auto_classes(MoESentenceEncoderConfig, MoESentenceEncoder)

__all__ = [
    "EXPERT_LAYOUTS",
    "MOE_CITATION",
    "DomainPair",
    "DomainPairEvaluator",
    "ExpertLayout",
    "ExpertRouter",
    "MoESentenceEncoder",
    "MoESentenceEncoderConfig",
    "PairF1",
    "RoutedLinear",
    "best_f1_threshold",
    "convert_to_experts",
    "domain_pair_splits",
    "evaluate_domain_pairs",
    "f1_at_threshold",
    "find_expert_layout",
    "positive_pairs",
]
