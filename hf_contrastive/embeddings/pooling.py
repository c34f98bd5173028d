"""Pooling of token states into one vector per sequence.

All functions take `token_states [B, L, H]` and `attention_mask [B, L]` (1 = real token) and
return `[B, H]`. Padding may be on either side. Sums are accumulated in float32 for half
precision inputs, then cast back.
"""

from __future__ import annotations

import torch

from hf_contrastive.embeddings.configuration import POOLING_MODES


def _acc_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else t.dtype


def mean_pool(
    token_states: torch.Tensor, attention_mask: torch.Tensor, sqrt_len: bool = False
) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(token_states.dtype)
    summed = (token_states * mask).sum(dim=1, dtype=_acc_dtype(token_states))
    count = attention_mask.sum(dim=1, keepdim=True).to(summed.dtype).clamp(min=1e-9)
    denom = count.sqrt() if sqrt_len else count
    return (summed / denom).to(token_states.dtype)


def max_pool(token_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    masked = token_states.masked_fill(attention_mask.unsqueeze(-1) == 0, float("-inf"))
    return masked.max(dim=1).values


def first_token_pool(token_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """First real token (position 0 with right padding; after the pads with left padding)."""
    first = attention_mask.to(torch.int32).argmax(dim=1)
    return token_states[torch.arange(token_states.size(0), device=token_states.device), first]


def last_token_pool(token_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Last real token of each row, whichever side the padding is on."""
    length = attention_mask.size(1)
    flipped_first = attention_mask.flip(1).to(torch.int32).argmax(dim=1)
    last = length - 1 - flipped_first
    return token_states[torch.arange(token_states.size(0), device=token_states.device), last]


def weighted_mean_pool(token_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Position-weighted mean (SGPT): the i-th real token gets weight i (1-based)."""
    acc = _acc_dtype(token_states)
    mask = attention_mask.to(acc)
    weights = mask.cumsum(dim=1) * mask  # 1..n over real tokens, 0 on pads, any padding side
    summed = (token_states.to(acc) * weights.unsqueeze(-1)).sum(dim=1)
    return (summed / weights.sum(dim=1, keepdim=True).clamp(min=1e-9)).to(token_states.dtype)


def pool(
    mode: str,
    last_hidden_state: torch.Tensor,
    attention_mask: torch.Tensor,
    hidden_states: tuple[torch.Tensor, ...] | None = None,
    pooler_output: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dispatch on the pooling `mode` (one of `POOLING_MODES`)."""
    if mode in ("cls", "cls_before_pooler"):
        return first_token_pool(last_hidden_state, attention_mask)
    if mode == "pooler":
        if pooler_output is None:
            raise ValueError(
                "pooling='pooler' needs a backbone that returns pooler_output (e.g. BertModel with its pooler)."
            )
        return pooler_output
    if mode == "mean":
        return mean_pool(last_hidden_state, attention_mask)
    if mode == "mean_sqrt_len":
        return mean_pool(last_hidden_state, attention_mask, sqrt_len=True)
    if mode == "max":
        return max_pool(last_hidden_state, attention_mask)
    if mode == "last_token":
        return last_token_pool(last_hidden_state, attention_mask)
    if mode == "weighted_mean":
        return weighted_mean_pool(last_hidden_state, attention_mask)
    if mode in ("avg_first_last", "avg_top2"):
        if hidden_states is None or len(hidden_states) < 3:
            raise ValueError(f"pooling={mode!r} needs all hidden states from a backbone with >= 2 layers.")
        first, second = (
            (hidden_states[1], hidden_states[-1]) if mode == "avg_first_last" else hidden_states[-2:]
        )
        return mean_pool((first + second) / 2.0, attention_mask)
    raise ValueError(f"Unknown pooling {mode!r}; expected one of {', '.join(POOLING_MODES)}.")


__all__ = [
    "pool",
    "mean_pool",
    "max_pool",
    "first_token_pool",
    "last_token_pool",
    "weighted_mean_pool",
]
