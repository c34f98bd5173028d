"""Dense task vectors (Ilharco et al. 2023, "Editing Models with Task Arithmetic").

A task vector is the element-wise difference `tau = theta_ft - theta_0` between a fine-tuned model and its
base, over every floating-point parameter and buffer. Vectors add, subtract and scale; `apply_to(base, lam)`
gives `theta_0 + lam * tau`. Negation (`theta_0 - lam * tau`) removes a behaviour that `tau` learnt,
for example producing unfaithful summaries.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["TaskVector"]


def _state_dict(model_or_state: Any) -> dict[str, torch.Tensor]:
    if isinstance(model_or_state, Mapping):
        return dict(model_or_state)
    if isinstance(model_or_state, torch.nn.Module):
        return model_or_state.state_dict()
    raise TypeError(f"Expected a torch.nn.Module or a state dict, got {type(model_or_state).__name__}.")


def _check_scale(scale: Any) -> float:
    """`scale` as a float; refuse what is not a finite number (NaN or inf would poison every weight)."""
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"A task vector scales by a number, got {type(scale).__name__}.")
    if not math.isfinite(scale):
        raise ValueError(
            f"A task vector scales by a finite number, got {scale!r}: every weight it touches would become "
            "NaN or infinite."
        )
    return float(scale)


def _architecture(model_or_state: Any) -> str | None:
    config = getattr(model_or_state, "config", None)
    if config is None:
        return None
    archs = getattr(config, "architectures", None)
    return (
        f"{getattr(config, 'model_type', None)}:{','.join(archs) if archs else type(model_or_state).__name__}"
    )


class TaskVector:
    """`tau = theta_ft - theta_0` over the floating-point entries of two state dicts.

    Args:
        vector (`Mapping[str, torch.Tensor]`): `{name: tensor}` (use [`from_models`] to build it from two models).
        architecture (`str | None`, *optional*): an identifier of the architecture the vector belongs to (checked when combining/applying).

    Operations: `tau1 + tau2`, `tau1 - tau2`, `-tau`, `lam * tau` (new vectors), `apply_to(model, lam)`
    (in place: `theta <- theta + lam * tau`), `state_dict_for(base, lam)`. Combining vectors with different
    parameter names or shapes, or applying one to another architecture, raises `ValueError`.
    """

    def __init__(self, vector: Mapping[str, torch.Tensor], architecture: str | None = None):
        if not isinstance(vector, Mapping) or not vector:
            raise ValueError("A TaskVector needs a non-empty {name: tensor} mapping.")
        for k, v in vector.items():
            if not isinstance(v, torch.Tensor) or not v.is_floating_point():
                raise TypeError(
                    f"Task vector entry {k!r} must be a floating-point tensor, got {type(v).__name__}."
                )
        self.vector = {k: v.detach().clone() for k, v in vector.items()}
        self.architecture = architecture

    @classmethod
    def from_models(cls, base: Any, finetuned: Any) -> TaskVector:
        """`finetuned - base` over floating-point entries; the two must share architecture, names and shapes."""
        arch0, arch1 = _architecture(base), _architecture(finetuned)
        if arch0 is not None and arch1 is not None and arch0 != arch1:
            raise ValueError(
                f"Task vector between different architectures: base {arch0} vs fine-tuned {arch1}."
            )
        sd0, sd1 = _state_dict(base), _state_dict(finetuned)
        _check_same_layout(sd0, sd1, "base", "fine-tuned")
        vector = {
            k: (sd1[k].detach().float() - sd0[k].detach().float()).to(sd0[k].dtype)
            for k in sd0
            if sd0[k].is_floating_point()
        }
        return cls(vector, arch0 or arch1)

    # -- algebra --------------------------------------------------------------------------------------------
    def _check_compatible(self, other: TaskVector) -> None:
        if not isinstance(other, TaskVector):
            raise TypeError(f"Expected a TaskVector, got {type(other).__name__}.")
        if self.architecture and other.architecture and self.architecture != other.architecture:
            raise ValueError(
                f"Task vectors of different architectures: {self.architecture} vs {other.architecture}."
            )
        _check_same_layout(self.vector, other.vector, "left", "right")

    def __add__(self, other: TaskVector) -> TaskVector:
        self._check_compatible(other)
        return TaskVector({k: v + other.vector[k] for k, v in self.vector.items()}, self.architecture)

    def __sub__(self, other: TaskVector) -> TaskVector:
        self._check_compatible(other)
        return TaskVector({k: v - other.vector[k] for k, v in self.vector.items()}, self.architecture)

    def __neg__(self) -> TaskVector:
        return TaskVector({k: -v for k, v in self.vector.items()}, self.architecture)

    def __mul__(self, scale: float) -> TaskVector:
        scale = _check_scale(scale)
        return TaskVector({k: v * scale for k, v in self.vector.items()}, self.architecture)

    __rmul__ = __mul__

    def norm(self) -> float:
        return float(torch.sqrt(sum((v.float() ** 2).sum() for v in self.vector.values())))

    # -- application ----------------------------------------------------------------------------------------
    def state_dict_for(self, base: Any, scale: float = 1.0) -> dict[str, torch.Tensor]:
        """`theta_0 + scale * tau` as a new state dict (non-float entries copied from `base`)."""
        scale = _check_scale(scale)
        self._check_target(base)
        sd = _state_dict(base)
        return {
            k: (v.detach().float() + scale * self.vector[k].float()).to(v.dtype)
            if k in self.vector
            else v.clone()
            for k, v in sd.items()
        }

    @torch.no_grad()
    def apply_to(self, model: torch.nn.Module, scale: float = 1.0) -> torch.nn.Module:
        """In place: every entry `theta <- theta + scale * tau`; returns `model`."""
        scale = _check_scale(scale)
        self._check_target(model)
        sd = model.state_dict()
        for k, v in self.vector.items():
            target = sd[k]
            target.copy_((target.float() + scale * v.to(target.device).float()).to(target.dtype))
        return model

    def _check_target(self, base: Any) -> None:
        arch = _architecture(base)
        if self.architecture and arch and arch != self.architecture:
            raise ValueError(f"Task vector of {self.architecture} applied to a {arch} model.")
        sd = _state_dict(base)
        floats = {k: v for k, v in sd.items() if v.is_floating_point()}
        _check_same_layout(floats, self.vector, "model", "task vector")

    def __repr__(self) -> str:
        return f"TaskVector({len(self.vector)} tensors, architecture={self.architecture!r}, norm={self.norm():.4g})"


def _check_same_layout(
    a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], name_a: str, name_b: str
) -> None:
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if only_a or only_b:
        raise ValueError(
            f"Different parameter names ({name_a} vs {name_b}): only in {name_a}: {only_a[:5]}"
            f"{'...' if len(only_a) > 5 else ''}; only in {name_b}: {only_b[:5]}{'...' if len(only_b) > 5 else ''}."
        )
    for k in a:
        if tuple(a[k].shape) != tuple(b[k].shape):
            raise ValueError(
                f"Shape mismatch for {k!r}: {tuple(a[k].shape)} ({name_a}) vs {tuple(b[k].shape)} ({name_b})."
            )
