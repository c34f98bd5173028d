"""What every loss shares: the output dataclass, input checks, citation and config plumbing."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hf_contrastive.core import distributed

__all__ = ["ContrastiveLoss", "LossOutput"]


@dataclass
class LossOutput:
    """Result of a loss `forward`.

    Attributes:
        loss: the scalar to back-propagate (keeps its graph).
        components: named, detached scalars for logging (the loss terms, accuracy, scale...).
    """

    loss: torch.Tensor
    components: dict[str, torch.Tensor] = field(default_factory=dict)

    def log_dict(self, prefix: str = "") -> dict[str, float]:
        """Components as plain floats (one host sync per entry), keys prefixed with `prefix`."""
        return {f"{prefix}{k}": float(v) for k, v in self.components.items()}


class ContrastiveLoss(nn.Module):
    """Base class: `citation` (BibTeX) and `config_dict()` (hyper-parameters for model cards).

    Subclasses set the class attribute `citation` and implement `config_dict`.

    Attributes:
        citation (`str`): BibTeX of the paper(s) that define the objective (copied into model cards).
        uses_momentum_encoder (`bool`, defaults to `False`): the loss compares the trained encoder's
            outputs with those of a momentum (EMA) copy of it and keeps a queue of past keys (MoCo).
            A trainer then keeps the key encoder and calls `forward(query, key, queue_ids)` and
            `enqueue(keys, queue_ids)` on the loss.
    """

    citation: str = ""
    uses_momentum_encoder: bool = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Losses compute in float32 even inside an autocast region (a loss called in a model's forward, as
        # HydraModel does, or user code under `torch.autocast`): autocast would run the similarity matmuls in
        # bf16 / fp16 again after `upcast`, and a softmax over scaled similarities loses the positive's mass there.
        with autocast_disabled():
            return super().__call__(*_upcast_all(args), **_upcast_all(kwargs))

    def config_dict(self) -> dict[str, Any]:
        """Hyper-parameters that define the objective, JSON-serialisable (for the model card)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config_dict().items())

    # -- shared helpers -------------------------------------------------------------------
    @staticmethod
    def _resolve_gather(setting: bool | None) -> bool:
        """`None` means: gather when `torch.distributed` runs more than one process."""
        if setting is None:
            return distributed.is_distributed()
        return bool(setting) and distributed.is_distributed()

    def _check_finite(self, **tensors: torch.Tensor | None) -> None:
        """Raise `ValueError` naming the inputs that hold NaN or inf (one host sync in total)."""
        present = {k: v for k, v in tensors.items() if v is not None and v.numel() > 0}
        if not present:
            return
        flags = torch.stack([~torch.isfinite(v.detach()).all() for v in present.values()])
        if not bool(flags.any()):
            return
        bad = []
        for (name, value), flag in zip(present.items(), flags.tolist()):
            if flag:
                v = value.detach()
                bad.append(
                    f"{name} (shape {tuple(v.shape)}: {int(torch.isnan(v).sum())} NaN, "
                    f"{int(torch.isinf(v).sum())} inf)"
                )
        raise ValueError(
            f"{type(self).__name__}: non-finite values in {', '.join(bad)}; the encoder produced NaN/inf "
            "(diverged training, fp16 overflow or bad inputs)"
        )


def resolve_scale(temperature: float | None, scale: float | None, default_temperature: float) -> float:
    """Turn `temperature` / `scale` (= 1 / temperature) into a validated scale."""
    if temperature is not None and scale is not None:
        if not math.isclose(temperature * scale, 1.0, rel_tol=1e-6):
            raise ValueError(
                f"give either temperature or scale (scale = 1 / temperature), not both: got "
                f"temperature={temperature} and scale={scale}"
            )
    if temperature is not None:
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        return 1.0 / float(temperature)
    if scale is not None:
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a finite number > 0 (scale = 1 / temperature), got {scale!r}")
        return float(scale)
    return 1.0 / default_temperature


def autocast_disabled() -> contextlib.ExitStack:
    """A context that switches autocast off on every device type where it is on (a no-op outside autocast)."""
    stack = contextlib.ExitStack()
    for device_type in ("cpu", "cuda", "xpu", "mps", "hpu", "npu"):
        try:
            enabled = torch.is_autocast_enabled(device_type)
        except (RuntimeError, TypeError, ValueError):  # a device type this build of torch does not know
            continue
        if enabled:
            stack.enter_context(torch.autocast(device_type=device_type, enabled=False))
    return stack


def _upcast_all(value: Any) -> Any:
    """[`upcast`] on every tensor of `value`: a tensor, or a plain tuple, list or dict holding tensors."""
    if isinstance(value, torch.Tensor):
        return upcast(value)
    if type(value) in (list, tuple):
        return type(value)(_upcast_all(v) for v in value)
    if type(value) is dict:
        return {k: _upcast_all(v) for k, v in value.items()}
    return value


def upcast(t: torch.Tensor) -> torch.Tensor:
    """Half-precision inputs are computed in fp32 (softmax over scaled similarities loses the
    positive's mass in fp16/bf16); fp32 and fp64 stay as they are."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def check_2d(name: str, t: torch.Tensor, owner: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{owner}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 2:
        raise ValueError(f"{owner}: {name} must have shape [B, D], got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"{owner}: {name} must be a floating-point tensor, got dtype {t.dtype}")
