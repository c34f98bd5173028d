"""Momentum (key) encoder: an exponential moving average of the trained encoder (MoCo, Contriever).

The key encoder of momentum contrast is not trained by gradient; after every optimiser step its
weights move towards the query encoder's, `k <- m k + (1 - m) q` (He et al. 2020; `m = 0.9995`
in Contriever, Izacard et al. 2022). Its keys change slowly, so the keys stored in the queue over
many steps stay comparable with today's queries.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["MomentumEncoder"]


class MomentumEncoder(nn.Module):
    """A frozen copy of `encoder` updated by exponential moving average.

    Args:
        encoder (`nn.Module`): the query encoder (unwrapped from DDP; a PEFT model is fine: the copy has the same
            parameter names, and frozen base weights stay equal).
        momentum (`float`, *optional*, defaults to `0.9995`): `m` in `k <- m k + (1 - m) q` (0.9995, Contriever's); must be in `[0, 1)`.
    """

    def __init__(self, encoder: nn.Module, momentum: float = 0.9995) -> None:
        super().__init__()
        if not (isinstance(momentum, (int, float)) and 0.0 <= momentum < 1.0):
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}.")
        self.momentum = float(momentum)
        self.encoder = copy.deepcopy(encoder)
        self.encoder.requires_grad_(False)
        # Steps of the query encoder already folded in (saved with checkpoints for exact resume).
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, encoder: nn.Module) -> None:
        """`k <- m k + (1 - m) q` for every floating-point parameter; buffers are copied."""
        current = dict(encoder.named_parameters())
        for name, k in self.encoder.named_parameters():
            q = current.get(name)
            if q is None:
                raise ValueError(
                    f"The trained encoder has no parameter {name!r}: it is not the key encoder's model."
                )
            if k.is_floating_point():
                k.lerp_(q.detach().to(k.dtype), 1.0 - self.momentum)
        buffers = dict(encoder.named_buffers())
        for name, b in self.encoder.named_buffers():
            if name in buffers:
                b.copy_(buffers[name])
        self.num_updates += 1

    def forward(self, *args, **kwargs):
        with torch.no_grad():
            return self.encoder(*args, **kwargs)
