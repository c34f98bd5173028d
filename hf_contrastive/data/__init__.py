"""data."""

from hf_contrastive.data.collator import ContrastiveDataCollator
from hf_contrastive.data.columns import ColumnRoles, resolve_column_roles
from hf_contrastive.data.samplers import NoDuplicatesBatchSampler

__all__ = ["ColumnRoles", "ContrastiveDataCollator", "NoDuplicatesBatchSampler", "resolve_column_roles"]
