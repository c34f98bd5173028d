"""Contrastive search as a `LogitsProcessor` that composes with other processors in greedy `generate`.

Trade-off: the processor only sees `input_ids` and scores, so it keeps its own key/value cache of the sequence
and runs the model twice per step on top of greedy's own forward (the chosen token, then the `k` candidates).
That is roughly 2-3x the cost of the fused decoding loop ([`hf_contrastive.contrastive_search`]), which should
be preferred unless the processor form is needed, for example to place contrastive re-ranking before or after
other processors in one `LogitsProcessorList`.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.cache_utils import DynamicCache
from transformers.generation.logits_process import LogitsProcessor

from hf_contrastive.generation.contrastive_search import (
    _candidate_mask,
    _degeneration_penalty,
    _normalize_fp32,
    _probe_shared_layout,
    _select_winner,
    validate_contrastive_arguments,
)

__all__ = ["ContrastiveSearchLogitsProcessor"]


class ContrastiveSearchLogitsProcessor(LogitsProcessor):
    """Keep only the contrastive-search winner among the top-`k` tokens (Su et al. 2022).

    For scores `s` [B, V] it takes `p = softmax(s)`, runs the top-`k` tokens through `model` to get their
    last-layer states `h_v`, and keeps `argmax_v (1 - alpha) p(v) - alpha max_j cos(h_v, h_j)`; every other
    token gets `-inf` (the winner keeps its score). Use it last in the list, with greedy decoding
    (`do_sample=False`), so the scores it sees are the final processed ones.

    Args:
        model (`nn.Module`): the decoder-only causal LM that `generate` runs (the same weights).
        penalty_alpha (`float`, *optional*, defaults to `0.6`): alpha in [0, 1] (default 0.6; 0 is greedy).
        top_k (`int`, *optional*, defaults to `4`): number of candidates k >= 1 (default 4).
        attention_mask (`torch.Tensor | None`, *optional*): [B, T0] mask of the prompt when it is padded (left padding); `None` means no padding.

    The processor is stateful for one `generate` call and resets itself when it sees a new prompt.
    """

    def __init__(
        self,
        model: nn.Module,
        penalty_alpha: float = 0.6,
        top_k: int = 4,
        attention_mask: torch.Tensor | None = None,
    ) -> None:
        self.penalty_alpha, self.top_k = validate_contrastive_arguments(penalty_alpha, top_k)
        if not isinstance(model, nn.Module) or not hasattr(model, "config"):
            raise TypeError(f"`model` must be a transformers model, got {type(model).__name__}.")
        if model.config.is_encoder_decoder:
            raise ValueError(
                "ContrastiveSearchLogitsProcessor supports decoder-only models; for encoder-decoder models use "
                "`generate(penalty_alpha=..., top_k=...)`."
            )
        if attention_mask is not None and attention_mask.ndim != 2:
            raise ValueError(
                f"`attention_mask` must be 2D [batch, prompt_length], got shape {tuple(attention_mask.shape)}."
            )
        self.model = model
        self.prompt_mask = attention_mask
        self._reset()

    def _reset(self) -> None:
        self._cache: DynamicCache | None = None
        self._context: torch.Tensor | None = None
        self._mask: torch.Tensor | None = None
        self._next_pos: torch.Tensor | None = None
        self._seen = 0

    @torch.no_grad()
    def _feed(self, input_ids: torch.Tensor) -> None:
        """Extend the processor's own cache and context states with the tokens not seen yet."""
        body = self.model.get_decoder()
        batch, length = input_ids.shape
        device = input_ids.device
        new_prompt = self._cache is None or length <= self._seen or self._context.shape[0] != batch
        if new_prompt:
            self._reset()
            layout, _ = _probe_shared_layout(self.model)
            if layout != "shared":
                raise ValueError(
                    f"ContrastiveSearchLogitsProcessor needs a model that accepts custom 4D attention masks and "
                    f"position ids; {type(self.model).__name__} does not. Use `generate(penalty_alpha=..., top_k=...)`."
                )
            if self.prompt_mask is not None:
                if self.prompt_mask.shape != (batch, length):
                    raise ValueError(
                        f"`attention_mask` has shape {tuple(self.prompt_mask.shape)} but the prompt is {(batch, length)}."
                    )
                mask = self.prompt_mask.bool().to(device)
            else:
                mask = torch.ones(batch, length, dtype=torch.bool, device=device)
            self._cache = DynamicCache(config=self.model.config.get_text_config(decoder=True))
            pos = (mask.long().cumsum(-1) - 1).clamp_min(0)
            new_ids, new_mask = input_ids, mask
            self._mask = mask
        else:
            n_new = length - self._seen
            new_ids = input_ids[:, self._seen :]
            pos = self._next_pos[:, None] + torch.arange(n_new, device=device)[None]
            self._mask = torch.cat([self._mask, self._mask.new_ones(batch, n_new)], dim=1)
            new_mask = self._mask
        out = body(
            input_ids=new_ids,
            attention_mask=new_mask.long(),
            position_ids=pos,
            cache=self._cache,
            use_cache=True,
            return_dict=True,
        )
        states = _normalize_fp32(out.last_hidden_state)
        self._context = states if self._context is None else torch.cat([self._context, states], dim=1)
        self._next_pos = pos[:, -1] + 1
        self._seen = length

    @torch.no_grad()
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self._feed(input_ids)
        body = self.model.get_decoder()
        batch = input_ids.shape[0]
        k = min(self.top_k, scores.shape[-1])
        probs = scores.float().softmax(dim=-1)
        top_k_probs, top_k_ids = probs.topk(k, dim=-1)
        cand = body(
            input_ids=top_k_ids.to(self.model.device),
            attention_mask=_candidate_mask(self._mask, k, self.model.dtype),
            position_ids=self._next_pos[:, None].expand(batch, k),
            cache=self._cache,
            use_cache=True,
            return_dict=True,
        ).last_hidden_state
        self._cache.crop(-k)
        penalty = _degeneration_penalty(self._context, self._mask, _normalize_fp32(cand))
        _, winner = _select_winner(top_k_probs, penalty.to(top_k_probs.device), self.penalty_alpha)
        keep = top_k_ids[torch.arange(batch, device=scores.device), winner.to(scores.device)]
        out = torch.full_like(scores, float("-inf"))
        rows = torch.arange(batch, device=scores.device)
        out[rows, keep] = scores[rows, keep]
        return out

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return f"{type(self).__name__}(penalty_alpha={self.penalty_alpha}, top_k={self.top_k})"
