"""Contrastive search decoding (Su et al. 2022) for transformers v5, as trusted local code.

Three ways to use the one decoding loop:

* `model.generate(..., custom_generate=hf_contrastive.contrastive_search, penalty_alpha=0.6, top_k=4)`;
* plain `model.generate(penalty_alpha=0.6, top_k=4)` and `pipeline(...)(..., penalty_alpha=0.6, top_k=4)`:
  importing `hf_contrastive` registers the local implementation for transformers' contrastive-search mode
  (see `hf_contrastive.generation.registration`; `HF_CONTRASTIVE_NO_REGISTER=1` skips it,
  [`disable_contrastive_search`] / [`enable_contrastive_search`] switch it at run time);
* [`ContrastiveSearchLogitsProcessor`] inside ordinary greedy `generate` (composable, slower).
"""

from __future__ import annotations

import os

from hf_contrastive.generation.contrastive_search import contrastive_search, validate_contrastive_arguments
from hf_contrastive.generation.logits_process import ContrastiveSearchLogitsProcessor
from hf_contrastive.generation.registration import HUB_REPO_ID, disable, enable, is_enabled

enable_contrastive_search = enable
disable_contrastive_search = disable
contrastive_search_enabled = is_enabled

__all__ = [
    "contrastive_search",
    "validate_contrastive_arguments",
    "ContrastiveSearchLogitsProcessor",
    "enable_contrastive_search",
    "disable_contrastive_search",
    "contrastive_search_enabled",
    "HUB_REPO_ID",
]

if os.environ.get("HF_CONTRASTIVE_NO_REGISTER", "").lower() not in ("1", "true", "yes"):
    enable()
