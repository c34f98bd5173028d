"""Lookups on backbone configs shared by the heads' configurations."""

from __future__ import annotations

from typing import Any

__all__ = ["HIDDEN_SIZE_ATTRIBUTES", "backbone_hidden_size"]

# Names transformers configs use for the width of the token states (BERT/Llama, T5/BART, GPT-2, DistilBERT).
HIDDEN_SIZE_ATTRIBUTES = ("hidden_size", "d_model", "n_embd", "dim")


def backbone_hidden_size(backbone_config: Any, owner: str = "config") -> int:
    """Width of the token states of a backbone, read from its config.

    Args:
        backbone_config (`PretrainedConfig` or `dict`): the backbone's configuration. Multimodal configs
            are searched through their text sub-config (`get_text_config()`).
        owner (`str`): the name used in error messages (the head's config class).

    Returns:
        `int`: the first of `hidden_size`, `d_model`, `n_embd`, `dim` that is an integer.

    Raises:
        `ValueError`: when `backbone_config` is missing or none of those attributes is set.
    """

    if backbone_config is None:
        raise ValueError(f"{owner} has no backbone_config.")
    candidates = [backbone_config]
    get_text_config = getattr(backbone_config, "get_text_config", None)
    if callable(get_text_config):
        text_config = get_text_config()
        if text_config is not None and text_config is not backbone_config:
            candidates.append(text_config)
    for config in candidates:
        for name in HIDDEN_SIZE_ATTRIBUTES:
            value = config.get(name) if isinstance(config, dict) else getattr(config, name, None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    raise ValueError(
        f"Cannot find the hidden size of backbone config {type(backbone_config).__name__} "
        f"(looked for {', '.join(HIDDEN_SIZE_ATTRIBUTES)})."
    )
