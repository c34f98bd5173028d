"""Model cards, the save / push / card mixin, and Hub upload helpers."""

from hf_contrastive.core.hub.card import EvalEntry, ModelCardInfo, render_card, render_model_card
from hf_contrastive.core.hub.mixin import CardTrainerMixin, HubMixin, push_with_card, save_with_card
from hf_contrastive.core.hub.push import MODEL_FILE_PATTERNS, push_folder_to_hub, push_to_hub

__all__ = [
    "CardTrainerMixin",
    "EvalEntry",
    "HubMixin",
    "MODEL_FILE_PATTERNS",
    "ModelCardInfo",
    "push_folder_to_hub",
    "push_to_hub",
    "push_with_card",
    "render_card",
    "render_model_card",
    "save_with_card",
]
