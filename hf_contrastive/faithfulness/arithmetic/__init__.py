"""Task arithmetic: dense task vectors and exact LoRA task vectors, and the negation-scale search."""

from hf_contrastive.faithfulness.arithmetic.lora import (
    LoraTaskVector,
    adapter_delta_weights,
    combine_adapters,
    negate_adapter,
)
from hf_contrastive.faithfulness.arithmetic.negation import select_negation_scale
from hf_contrastive.faithfulness.arithmetic.task_vectors import TaskVector

__all__ = [
    "LoraTaskVector",
    "TaskVector",
    "adapter_delta_weights",
    "combine_adapters",
    "negate_adapter",
    "select_negation_scale",
]
