"""Task arithmetic on LoRA adapters without merging them into the base weights.

A LoRA adapter is a task vector in factored form: on each adapted module `dW = s * B @ A` (`s` its
scaling). A linear combination `sum_i w_i dW_i` of adapters is again a LoRA adapter, exactly, when the factors
are concatenated: `A = cat(w_i s_i A_i)` along the rank, `B = cat(B_i)`, scaling 1 (PEFT's
`add_weighted_adapter(combination_type="cat")`). A single adapter with weight `w` is exact the same way.

What is *not* exact, and therefore never used here: PEFT's `linear` combination of several adapters (it mixes
`A` and `B` separately, creating cross terms `B_i A_j`), and TIES / DARE (they prune and re-sign entries, so
`-tau` is no longer the negation of `tau`). PEFT also returns silently when the new adapter's name already
exists; here that is an error, as is a missing adapter.

Typical use (task-vector negation of a "hallucination" adapter, Ilharco et al. 2023)::

    tv = LoraTaskVector(model, "sft") - 0.5 * LoraTaskVector(model, "halluc")
    tv.add_to(model, "sft_minus_halluc")   # exact: W0 + dW_sft - 0.5 dW_halluc, base weights untouched
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from peft.tuners.lora import LoraLayer

__all__ = ["LoraTaskVector", "combine_adapters", "negate_adapter", "adapter_delta_weights"]


def _peft_config(model: Any) -> dict[str, Any]:
    config = getattr(model, "peft_config", None)
    if not isinstance(config, dict) or not hasattr(model, "add_weighted_adapter"):
        raise TypeError(
            f"LoRA arithmetic needs a peft model with LoRA adapters (PeftModel / LoraModel), got {type(model).__name__}."
        )
    return config


def _check_adapters(model: Any, names: list[str]) -> None:
    config = _peft_config(model)
    missing = [n for n in names if n not in config]
    if missing:
        raise ValueError(f"Adapter(s) {missing} do not exist; the model has {sorted(config)}.")
    for n in names:
        cfg = config[n]
        if type(cfg).__name__ != "LoraConfig":
            raise ValueError(
                f"Adapter {n!r} is a {type(cfg).__name__}; only LoRA adapters combine exactly here."
            )
        if getattr(cfg, "use_dora", False):
            raise ValueError(
                f"Adapter {n!r} uses DoRA, whose weight is not linear in the adapter: cannot combine."
            )
        if getattr(cfg, "use_rslora", False):
            raise ValueError(
                f"Adapter {n!r} uses rsLoRA; PEFT rebuilds a combined adapter with alpha = r, which under rsLoRA "
                "would rescale it by sqrt(r): not exact."
            )


def adapter_delta_weights(model: Any, adapter: str) -> dict[str, torch.Tensor]:
    """`{module name: dW}` (float32, the effective weight change) of `adapter` on every adapted module."""
    _check_adapters(model, [adapter])

    out = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and (adapter in module.lora_A or adapter in module.lora_embedding_A):
            out[name] = module.get_delta_weight(adapter).detach().float()
    return out


def combine_adapters(
    model: Any,
    weights: Mapping[str, float],
    new_name: str,
    activate: bool = True,
    verify: bool = False,
    atol: float = 1e-5,
) -> str:
    """Add adapter `new_name` with `dW = sum_i weights[i] * dW_i` exactly (concatenated factors).

    Args:
        model (`Any`): a PEFT model holding the adapters.
        weights (`Mapping[str, float]`): `{adapter name: weight}` (weights may be negative; 1 adapter with `-1` negates it).
        new_name (`str`): name of the new adapter; must not exist yet.
        activate (`bool`, *optional*, defaults to `True`): make it the active adapter.
        verify (`bool`, *optional*, defaults to `False`): check, module by module, that the new delta equals the weighted sum (to `atol`, relative
            to the largest entry) and raise `RuntimeError` otherwise.

    Returns `new_name`. The base weights are never changed.
    """
    if not weights:
        raise ValueError("`weights` must name at least one adapter.")
    if not isinstance(new_name, str) or not new_name or "." in new_name:
        raise ValueError(f"`new_name` must be a non-empty str without '.' (a module name), got {new_name!r}.")
    config = _peft_config(model)
    names = list(weights)
    _check_adapters(model, names)
    if new_name in config:
        raise ValueError(
            f"An adapter named {new_name!r} already exists (PEFT would silently keep the old one); pick another name "
            "or delete it first with model.delete_adapter(name)."
        )
    values = [float(weights[n]) for n in names]
    model.add_weighted_adapter(adapters=names, weights=values, adapter_name=new_name, combination_type="cat")
    if new_name not in config:  # pragma: no cover - defensive, PEFT API change
        raise RuntimeError(f"PEFT did not create adapter {new_name!r}.")
    if activate:
        model.set_adapter(new_name)
    if verify:
        _verify_combination(model, new_name, names, values, atol)
    return new_name


def _verify_combination(
    model: Any, new_name: str, names: list[str], values: list[float], atol: float
) -> None:
    """Raise `RuntimeError` unless `new_name`'s deltas equal `sum_i values[i] * dW_names[i]` module by module.

    Nothing to compare is a failure, not a pass: an empty combined adapter, or one that misses (or adds) an
    adapted module, is reported instead of being accepted vacuously.
    """
    got = adapter_delta_weights(model, new_name)
    parts = [adapter_delta_weights(model, n) for n in names]
    expected_modules = set().union(*(p.keys() for p in parts))
    if not got or not expected_modules:
        raise RuntimeError(
            f"Nothing to verify: adapter {new_name!r} has {len(got)} adapted module(s) and the adapters "
            f"{names} have {len(expected_modules)}; expected at least one LoRA delta on both sides."
        )
    if set(got) != expected_modules:
        missing = sorted(expected_modules - set(got))
        extra = sorted(set(got) - expected_modules)
        raise RuntimeError(
            f"Combined adapter {new_name!r} covers other modules than {names}: missing {missing}, extra {extra}."
        )
    for module, delta in got.items():
        want = sum(w * p[module] for w, p in zip(values, parts) if module in p)
        scale = max(float(want.abs().max()), 1.0)
        if not torch.allclose(delta, want, atol=atol * scale, rtol=0):
            gap = float((delta - want).abs().max())
            raise RuntimeError(
                f"Combined adapter {new_name!r} differs from the weighted sum on {module} (max gap {gap:.3g}, "
                f"allowed {atol * scale:.3g})."
            )


def negate_adapter(model: Any, adapter: str, new_name: str, scale: float = 1.0, activate: bool = True) -> str:
    """Add adapter `new_name` with `dW = -scale * dW_adapter` (exact); returns `new_name`."""
    return combine_adapters(model, {adapter: -float(scale)}, new_name, activate=activate)


class LoraTaskVector:
    """A linear combination of LoRA adapters of one PEFT model, built lazily and added as one exact adapter.

    `LoraTaskVector(model, "a")` is `dW_a`; `+`, `-`, unary `-` and scalar `*` give new combinations;
    [`add_to`] creates the adapter (`combination_type="cat"`), [`delta_weights`] the dense deltas.
    """

    def __init__(self, model: Any, adapter: str | Mapping[str, float]):
        self.model = model
        terms = {adapter: 1.0} if isinstance(adapter, str) else {k: float(v) for k, v in adapter.items()}
        _check_adapters(model, list(terms))
        self.terms = terms

    def _combine(self, other: LoraTaskVector, sign: float) -> LoraTaskVector:
        if not isinstance(other, LoraTaskVector):
            raise TypeError(f"Expected a LoraTaskVector, got {type(other).__name__}.")
        if other.model is not self.model:
            raise ValueError("LoRA task vectors of different models cannot be combined without merging.")
        terms = dict(self.terms)
        for k, v in other.terms.items():
            terms[k] = terms.get(k, 0.0) + sign * v
        return LoraTaskVector(self.model, terms)

    def __add__(self, other: LoraTaskVector) -> LoraTaskVector:
        return self._combine(other, 1.0)

    def __sub__(self, other: LoraTaskVector) -> LoraTaskVector:
        return self._combine(other, -1.0)

    def __neg__(self) -> LoraTaskVector:
        return LoraTaskVector(self.model, {k: -v for k, v in self.terms.items()})

    def __mul__(self, scale: float) -> LoraTaskVector:
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise TypeError(f"A task vector scales by a number, got {type(scale).__name__}.")
        return LoraTaskVector(self.model, {k: v * float(scale) for k, v in self.terms.items()})

    __rmul__ = __mul__

    def add_to(self, model: Any | None = None, new_name: str = "task_vector", activate: bool = True) -> str:
        """Create the combination as adapter `new_name` on the model (which must be the vector's own)."""
        if model is not None and model is not self.model:
            raise ValueError("add_to: the model must be the one the adapters belong to.")
        terms = {k: v for k, v in self.terms.items() if v != 0.0}
        if not terms:
            raise ValueError("The combination is zero; there is no adapter to add.")
        return combine_adapters(self.model, terms, new_name, activate=activate)

    def delta_weights(self) -> dict[str, torch.Tensor]:
        """`{module: sum_i w_i dW_i}` as dense float32 tensors (for checks; costs one matrix per module)."""
        total: dict[str, torch.Tensor] = {}
        for name, w in self.terms.items():
            for module, delta in adapter_delta_weights(self.model, name).items():
                total[module] = total.get(module, 0.0) + w * delta
        return total

    def __repr__(self) -> str:
        return "LoraTaskVector(" + " ".join(f"{v:+g}*{k}" for k, v in self.terms.items()) + ")"
