"""data."""

from hf_contrastive.data.collator import ContrastiveDataCollator, length_buckets
from hf_contrastive.data.columns import ColumnRoles, resolve_column_roles
from hf_contrastive.data.mining import mine_hard_negatives
from hf_contrastive.data.samplers import NoDuplicatesBatchSampler

__all__ = [
    "ColumnRoles",
    "ContrastiveDataCollator",
    "length_buckets",
    "mine_hard_negatives",
    "NoDuplicatesBatchSampler",
    "resolve_column_roles",
]

# -- relation extraction (TKRE) --
from hf_contrastive.data.mslm import MaskedSpanLMCollator  # noqa: E402
from hf_contrastive.data.relation import (  # noqa: E402
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
from hf_contrastive.data.relation_knowledge import KnowledgeGenerator, ValidationReport  # noqa: E402

__all__ += [
    "SEMEVAL_LABELS",
    "Episode",
    "KnowledgeGenerator",
    "MaskedSpanLMCollator",
    "RelationDataCollator",
    "RelationDataset",
    "RelationExample",
    "ValidationReport",
    "load_fewrel",
    "load_semeval2010",
    "sample_episodes",
    "sample_k_shot",
]

# -- faithful summarisation (span-level fine-tuning) --
from hf_contrastive.data.annotation import (  # noqa: E402
    LLMJudgeAnnotator,
    PerturbationAnnotator,
    SpanAnnotation,
    SpanAnnotator,
    load_summary_splits,
)
from hf_contrastive.data.spans import (  # noqa: E402
    UNFAITHFUL_MASK,
    SpanDataCollator,
    SpanExample,
    SpanFeatureBuilder,
    build_summary_prompt,
    token_span_mask,
)

__all__ += [
    "LLMJudgeAnnotator",
    "PerturbationAnnotator",
    "SpanAnnotation",
    "SpanAnnotator",
    "SpanDataCollator",
    "SpanExample",
    "SpanFeatureBuilder",
    "UNFAITHFUL_MASK",
    "build_summary_prompt",
    "load_summary_splits",
    "token_span_mask",
]

# -- retrieval pair builders (Contriever crops, inverse cloze, context windows) --
from hf_contrastive.data.augment import (  # noqa: E402
    context_window_pairs,
    inverse_cloze_pairs,
    random_crop,
    random_crop_pairs,
    split_sentences,
    word_deletion,
)

__all__ += [
    "context_window_pairs",
    "inverse_cloze_pairs",
    "random_crop",
    "random_crop_pairs",
    "split_sentences",
    "word_deletion",
]
