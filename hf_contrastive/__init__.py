"""hf-contrastive: contrastive learning methods for the Hugging Face stack.

Public API is re-exported here; anything not listed may change between releases.
"""

from __future__ import annotations

__version__ = "0.1.0.dev0"

# --- modeling / hub / evaluation (foundation) ---

# --- losses ---
from hf_contrastive.losses import *  # noqa: E402,F403

# --- generation (contrastive search) ---
from hf_contrastive.generation import *  # noqa: E402,F403

# --- trainers ---
