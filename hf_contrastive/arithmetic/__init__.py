"""arithmetic."""

# -- task vectors (dense and LoRA) --
from hf_contrastive.arithmetic.lora import (  # noqa: E402, F401
    LoraTaskVector,
    adapter_delta_weights,
    combine_adapters,
    negate_adapter,
)
from hf_contrastive.arithmetic.negation import select_negation_scale  # noqa: E402, F401
from hf_contrastive.arithmetic.task_vectors import TaskVector  # noqa: E402, F401
