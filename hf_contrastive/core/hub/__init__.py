"""Model cards and Hub upload helpers."""

from hf_contrastive.core.hub.card import EvalEntry, ModelCardInfo, render_model_card
from hf_contrastive.core.hub.push import push_folder_to_hub, push_to_hub

__all__ = ["EvalEntry", "ModelCardInfo", "render_model_card", "push_folder_to_hub", "push_to_hub"]
