"""What the heads' configurations share: the backbone width lookup and the Auto-class registration."""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, AutoModel, AutoProcessor

__all__ = [
    "HIDDEN_SIZE_ATTRIBUTES",
    "backbone_hidden_size",
    "register_auto_classes",
    "registered_model_types",
]

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


# The `model_type` of every head registered through `register_auto_classes`: a folder whose config names one
# of them was written by hf-contrastive, and is never a backbone to load through `AutoModel`.
_REGISTERED_MODEL_TYPES: set[str] = set()


def registered_model_types() -> frozenset[str]:
    """The `model_type` of every hf-contrastive head registered so far (those of the imported wings)."""
    return frozenset(_REGISTERED_MODEL_TYPES)


def register_auto_classes(config_class: type, model_class: type, processor_class: type | None = None) -> None:
    """Register a head with `AutoConfig` / `AutoModel` (and `AutoProcessor`), so that
    `AutoModel.from_pretrained(folder)` rebuilds it. Idempotent: a second import or a reload of the wing
    does not raise "already registered".

    Args:
        config_class (`type`): the head's `PretrainedConfig` subclass (with a `model_type`).
        model_class (`type`): the head's `PreTrainedModel` subclass.
        processor_class (`type`, *optional*): its processor, registered with `AutoProcessor`.
    """
    _REGISTERED_MODEL_TYPES.add(config_class.model_type)
    for register in (
        lambda: AutoConfig.register(config_class.model_type, config_class),
        lambda: AutoModel.register(config_class, model_class),
        *([lambda: AutoProcessor.register(config_class, processor_class)] if processor_class else []),
    ):
        try:
            register()
        except ValueError:  # already registered by an earlier import
            pass
