"""hf-contrastive: contrastive learning methods for the Hugging Face stack.

Public API is re-exported here; anything not listed may change between releases.
"""

from __future__ import annotations

__version__ = "0.1.0.dev0"

# --- modeling / hub / evaluation (foundation) ---
# --- generation (contrastive search) ---
from hf_contrastive.generation import *  # noqa: E402,F403
from hf_contrastive.hub import EvalEntry, ModelCardInfo, push_folder_to_hub, render_model_card  # noqa: E402

# --- losses ---
from hf_contrastive.losses import *  # noqa: E402,F403
from hf_contrastive.modeling import (  # noqa: E402
    POOLING_MODES,
    SentenceEncoder,
    SentenceEncoderConfig,
    SentenceEncoderOutput,
)

# --- trainers ---
