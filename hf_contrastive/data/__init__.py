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
