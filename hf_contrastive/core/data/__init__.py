"""Data shared by the wings: role-named columns, collation, batch sampling, benchmark loaders."""

from hf_contrastive.core.data.collator import (
    ContrastiveDataCollator,
    LanguageIdCollator,
    PromptingCollator,
    RowLabelCollator,
    length_buckets,
)
from hf_contrastive.core.data.columns import ColumnRoles, resolve_column_roles
from hf_contrastive.core.data.samplers import NoDuplicatesBatchSampler

__all__ = [
    "ColumnRoles",
    "ContrastiveDataCollator",
    "LanguageIdCollator",
    "RowLabelCollator",
    "PromptingCollator",
    "NoDuplicatesBatchSampler",
    "length_buckets",
    "resolve_column_roles",
]
