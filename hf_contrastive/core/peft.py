"""The one place that wraps a model with a `peft` config: target modules are checked first."""

from __future__ import annotations

from typing import Any

from peft import get_peft_model
from torch import nn

__all__ = ["apply_peft", "check_target_modules"]


def check_target_modules(model: nn.Module, peft_config: Any) -> None:
    """Refuse a `peft` config whose `target_modules` name modules the model does not have.

    A string `target_modules` (`"all-linear"` or a regular expression) is left to `peft`; a list names
    modules by their last name part or by a suffix of their full name.

    Args:
        model (`nn.Module`):
            The model to be wrapped.
        peft_config (`peft.PeftConfig`):
            The config; configs without `target_modules` pass.
    """
    targets = getattr(peft_config, "target_modules", None)
    if not targets or isinstance(targets, str):
        return
    full_names = [n for n, _ in model.named_modules()]
    last_names = {n.rsplit(".", 1)[-1] for n in full_names}
    missing = sorted(t for t in targets if t not in last_names and not any(n.endswith(t) for n in full_names))
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(
            f"LoRA target module(s) {missing} do not exist in this model. Linear layers it has: {linear}."
        )


def apply_peft(model: nn.Module, peft_config: Any) -> Any:
    """`peft.get_peft_model(model, peft_config)` after checking the config's target modules.

    Args:
        model (`nn.Module`):
            The model to wrap.
        peft_config (`peft.PeftConfig`):
            A `peft` config such as `LoraConfig`.

    Returns:
        The `PeftModel`.
    """
    check_target_modules(model, peft_config)
    return get_peft_model(model, peft_config)
