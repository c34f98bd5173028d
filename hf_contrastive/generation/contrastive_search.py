"""Contrastive search decoding loop (Su et al. 2022, "A Contrastive Framework for Neural Text Generation").

At every step the top-`k` tokens of the (processed) next-token distribution are scored with

    score(v) = (1 - alpha) * p(v | x_<t) - alpha * max_{j < t} cos(h_v, h_j)

where `h_v` is the last-layer hidden state the model produces for candidate `v` and `h_j` runs over all
previous positions (prompt and generated tokens, padding excluded). The winner is appended; `alpha = 0` is
greedy search. The algorithm is deterministic.

Two layouts compute the candidates' hidden states; they give the same tokens:

* `"shared"` (decoder-only models, the default when the model passes a one-time probe): the `k` candidates of
  a row are fed as `k` extra positions of that row, with a 4D attention mask that lets each candidate see the
  prefix and itself only, and the same position id. The prefix cache is shared (never copied `k` times), only
  the winner's key/value entry is kept, and the LM head runs on the winner only.
* `"expand"` (encoder-decoder models, models that fail the probe, or `output_attentions=True`): the `B*k`
  candidates are run as batch rows over a `k`-fold copy of the decoder self-attention cache, as transformers
  did up to v4.55. The encoder output and cross-attention cache are expanded once, not at every step.

Cosine similarities are computed in float32 whatever the model dtype, and padded positions are excluded with a
mask that cannot be defeated by all-zero hidden states (transformers <= 4.55 let `0/0` NaNs from Llama-family
pad positions leak into the max and fall back to greedy for padded rows).
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer, EncoderDecoderCache
from transformers.generation.configuration_utils import GenerationConfig
from transformers.generation.logits_process import LogitsProcessorList
from transformers.generation.stopping_criteria import StoppingCriteriaList
from transformers.generation.utils import GenerateDecoderOnlyOutput, GenerateEncoderDecoderOutput

__all__ = ["contrastive_search", "validate_contrastive_arguments"]

# Model-kwargs the shared-prefix layout understands; anything else (multimodal inputs, token types, ...) makes the
# loop fall back to the generic "expand" layout, which passes every kwarg through `prepare_inputs_for_generation`.
_SHARED_LAYOUT_KWARGS = {
    "attention_mask",
    "position_ids",
    "cache",
    "use_cache",
    "logits_to_keep",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
}

_LAYOUT_PROBE: weakref.WeakKeyDictionary[nn.Module, tuple[str, bool]] = weakref.WeakKeyDictionary()


def validate_contrastive_arguments(penalty_alpha: Any, top_k: Any) -> tuple[float, int]:
    """Check `penalty_alpha` (a float in [0, 1]) and `top_k` (an int >= 1); return them normalised.

    Raises:
        ValueError / TypeError: with a message naming the expected range and the value given.
    """
    if penalty_alpha is None:
        raise ValueError(
            "Contrastive search needs `penalty_alpha` (a float in [0, 1], usually 0.6); got None. "
            "Pass e.g. `generate(..., penalty_alpha=0.6, top_k=4)`."
        )
    if isinstance(penalty_alpha, bool) or not isinstance(penalty_alpha, (int, float)):
        raise TypeError(f"`penalty_alpha` must be a float in [0, 1], got {type(penalty_alpha).__name__}.")
    if not 0.0 <= float(penalty_alpha) <= 1.0:
        raise ValueError(f"`penalty_alpha` must be in [0, 1] (0 = greedy), got {penalty_alpha}.")
    if top_k is None:
        raise ValueError("Contrastive search needs `top_k` (an int >= 1, usually 4); got None.")
    if isinstance(top_k, bool) or not isinstance(top_k, int):
        raise TypeError(f"`top_k` must be an int >= 1, got {type(top_k).__name__}.")
    if top_k < 1:
        raise ValueError(f"`top_k` must be >= 1 (the number of candidates scored per step), got {top_k}.")
    return float(penalty_alpha), int(top_k)


def _check_cache(model: nn.Module, cache: Any) -> None:
    """Reject caches the loop cannot edit row- or position-wise (static, sliding-window, recurrent, quantized)."""
    name = type(model).__name__
    if cache is None:
        raise ValueError(
            f"Contrastive search needs a key/value cache, but {name} produced none (use_cache=False or a model "
            "without a cache). Pass `use_cache=True` with a model that supports a DynamicCache."
        )
    if getattr(model, "_is_stateful", False):
        raise ValueError(
            f"Contrastive search is not supported for stateful/recurrent models such as {name}: their state "
            "cannot be rolled back to score several candidates."
        )
    self_cache = cache.self_attention_cache if isinstance(cache, EncoderDecoderCache) else cache
    if not isinstance(self_cache, Cache):
        raise ValueError(
            f"Contrastive search needs a transformers `Cache` object, got {type(cache).__name__}."
        )
    for layer in self_cache.layers:
        if type(layer) is not DynamicLayer:
            raise ValueError(
                "Contrastive search supports only a full-attention DynamicCache (`cache_implementation=None` or "
                f"'dynamic'); got a cache layer of type {type(layer).__name__} for {name}. Static, sliding-window, "
                "offloaded, quantized and linear-attention (recurrent) caches are not supported."
            )


def _precheck(model: nn.Module, model_kwargs: dict[str, Any]) -> None:
    """Fail early, with a clear message, on models and caches the loop cannot serve."""
    name = type(model).__name__
    supports_dynamic = getattr(model, "_supports_default_dynamic_cache", lambda: True)()
    if getattr(model, "_is_stateful", False) or not supports_dynamic:
        raise ValueError(
            f"Contrastive search is not supported for stateful/recurrent models such as {name}: their state "
            "cannot be rolled back to score several candidates (a full-attention DynamicCache is needed)."
        )
    cache = model_kwargs.get("cache")
    if isinstance(cache, Cache):
        self_cache = cache.self_attention_cache if isinstance(cache, EncoderDecoderCache) else cache
        if any(self_cache.is_linear):
            raise ValueError(
                f"Contrastive search is not supported for stateful/recurrent (linear-attention) layers of {name}."
            )
        _check_cache(model, cache)


def _normalize_fp32(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise the last dim in float32; all-zero vectors stay zero instead of becoming NaN."""
    x = x.float()
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _degeneration_penalty(
    context_norm: torch.Tensor, context_mask: torch.Tensor, candidates_norm: torch.Tensor
) -> torch.Tensor:
    """max_j cos(h_v, h_j) over valid context positions.

    Shapes: `context_norm` [B, T, D] (unit vectors), `context_mask` [B, T] bool, `candidates_norm` [B, K, D];
    returns [B, K]. Rows without any valid context position get a penalty of 0.
    """
    cos = torch.matmul(candidates_norm, context_norm.transpose(1, 2))  # [B, K, T]
    cos = cos.masked_fill(~context_mask[:, None, :], float("-inf"))
    penalty = cos.max(dim=-1).values
    return torch.where(torch.isfinite(penalty), penalty, torch.zeros_like(penalty))


def _select_winner(
    top_k_probs: torch.Tensor, penalty: torch.Tensor, penalty_alpha: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Contrastive score `(1 - a) p - a * penalty` ([B, K]) and the index of its maximum per row ([B])."""
    score = (1.0 - penalty_alpha) * top_k_probs - penalty_alpha * penalty
    return score, score.max(dim=-1).indices


class _Head:
    """The LM head applied to final hidden states, so it can run on the winning candidate only.

    Covers the plain projection plus the output-side extras some families add (BART-style `final_logits_bias`,
    `logit_scale`, Gemma-style `final_logit_softcapping`). The layout probe checks it against the full model.
    """

    def __init__(self, model: nn.Module) -> None:
        self.proj = model.get_output_embeddings()
        self.bias = getattr(model, "final_logits_bias", None)
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.scale = getattr(config, "logit_scale", None)
        self.softcap = getattr(config, "final_logit_softcapping", None)

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.proj(hidden)
        if isinstance(self.bias, torch.Tensor):
            logits = logits + self.bias.to(logits.device)
        if isinstance(self.scale, (int, float)) and not isinstance(self.scale, bool):
            logits = logits * self.scale
        if isinstance(self.softcap, (int, float)) and self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


def _candidate_mask(prefix_mask: torch.Tensor, k: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive 4D mask [B, 1, K, T+K]: candidate i sees the valid prefix positions and itself, not the others."""
    batch, length = prefix_mask.shape
    allowed = torch.zeros(batch, k, length + k, dtype=torch.bool, device=prefix_mask.device)
    allowed[:, :, :length] = prefix_mask[:, None, :]
    allowed[:, :, length:] = torch.eye(k, dtype=torch.bool, device=prefix_mask.device)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=prefix_mask.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def _keep_candidate(cache: DynamicCache, prefix_len: int, winner: torch.Tensor) -> None:
    """After a shared-layout forward, keep only each row's winning candidate entry at position `prefix_len`.

    Each layer holds [B, H, prefix_len + K, D]; the winner's entry is copied into slot `prefix_len` and the
    layer is narrowed to `prefix_len + 1` (a view: nothing else is copied).
    """
    rows = torch.arange(winner.shape[0], device=winner.device)
    for layer in cache.layers:
        for name in ("keys", "values"):
            t = getattr(layer, name)
            slot = (prefix_len + winner).to(t.device)
            t[:, :, prefix_len] = t[rows.to(t.device), :, slot]
            setattr(layer, name, t[:, :, : prefix_len + 1])


def _probe_shared_layout(model: nn.Module) -> tuple[str, bool]:
    """Decide once per model whether the shared-prefix layout reproduces one-token-at-a-time hidden states.

    The probe runs a 3-token prefix and 2 candidates both ways (and checks the head against the full model's
    logits); any model that ignores custom 4D masks or position ids, or post-processes logits in a way
    `_Head` does not know, is routed to the `"expand"` layout. Returns (layout, head_ok).
    """
    impl = getattr(model.config, "_attn_implementation", None)
    cached = _LAYOUT_PROBE.get(model)
    if cached is not None and cached[0] == impl:
        return cached[1]
    result = ("expand", False)
    try:
        result = _run_probe(model)
    except Exception:  # noqa: BLE001 - any failure of the fast path means: use the generic one
        result = ("expand", False)
    _LAYOUT_PROBE[model] = (impl, result)
    return result


@torch.no_grad()
def _run_probe(model: nn.Module) -> tuple[str, bool]:
    if model.config.is_encoder_decoder:
        return ("expand", False)
    body = model.get_decoder()
    if body is model:
        return ("expand", False)
    head = _Head(model)
    device = next(model.parameters()).device
    vocab = model.get_output_embeddings().weight.shape[0]
    prefix = (torch.tensor([[3, 7, 11]], device=device) % vocab).long()
    cands = (torch.tensor([[5, 13]], device=device) % vocab).long()
    tol = 1e-4 if model.dtype == torch.float32 else 3e-2

    full = model(input_ids=prefix, use_cache=False, return_dict=True).logits[:, -1].float()
    out = body(input_ids=prefix, use_cache=False, return_dict=True).last_hidden_state
    head_ok = torch.allclose(head(out[:, -1]).float(), full, atol=tol * 10, rtol=tol * 10)

    ref = []
    for i in range(cands.shape[1]):
        seq = torch.cat([prefix, cands[:, i : i + 1]], dim=1)
        ref.append(body(input_ids=seq, use_cache=False, return_dict=True).last_hidden_state[:, -1])
    ref_h = torch.stack(ref, dim=1).float()

    cache = DynamicCache(config=model.config.get_text_config(decoder=True))
    body(
        input_ids=prefix,
        cache=cache,
        use_cache=True,
        position_ids=torch.arange(3, device=device)[None],
        return_dict=True,
    )
    prefix_mask = torch.ones(1, 3, dtype=torch.bool, device=device)
    shared_h = body(
        input_ids=cands,
        cache=cache,
        use_cache=True,
        attention_mask=_candidate_mask(prefix_mask, 2, model.dtype),
        position_ids=torch.full((1, 2), 3, device=device),
        return_dict=True,
    ).last_hidden_state.float()
    same = torch.allclose(shared_h, ref_h, atol=tol, rtol=tol * 10)
    return ("shared" if (same and head_ok) else "expand", bool(head_ok))


def _stack_hidden(hidden_states: tuple[torch.Tensor, ...], rows: torch.Tensor, cols: torch.Tensor) -> tuple:
    return tuple(h[rows, cols][:, None] for h in hidden_states)


@torch.no_grad()
def contrastive_search(
    model: nn.Module,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList,
    stopping_criteria: StoppingCriteriaList,
    generation_config: GenerationConfig,
    synced_gpus: bool = False,
    streamer: Any | None = None,
    contrastive_layout: str | None = None,
    **model_kwargs: Any,
) -> GenerateDecoderOnlyOutput | GenerateEncoderDecoderOutput | torch.LongTensor:
    """Generate with contrastive search; the decoding method behind `generate(penalty_alpha=..., top_k=...)`.

    Usable as `model.generate(..., custom_generate=contrastive_search, penalty_alpha=0.6, top_k=4)` (the
    callable contract of transformers v5) and, once [`hf_contrastive.generation.enable`] has run (importing
    `hf_contrastive` does it), behind plain `model.generate(penalty_alpha=0.6, top_k=4)`.

    Args:
        model (`nn.Module`): a causal LM or encoder-decoder model with a language-modelling head.
        input_ids (`torch.LongTensor`): [B, T] prompt (decoder-only, left-padded batches welcome) or decoder start ids (enc-dec).
        logits_processor (`LogitsProcessorList`): applied to the next-token logits before the top-k (as in greedy search).
        stopping_criteria (`StoppingCriteriaList`): EOS, `max_new_tokens` / `max_length` and any user criteria.
        generation_config (`GenerationConfig`): reads `penalty_alpha` (alpha in [0, 1]; 0 is greedy) and `top_k` (k >= 1), plus
            `return_dict_in_generate`, `output_scores`, `output_logits`, `output_hidden_states`,
            `output_attentions`.
        synced_gpus (`bool`, *optional*, defaults to `False`): keep stepping until every process has finished (FSDP / ZeRO-3).
        streamer (`Any | None`, *optional*): receives each step's tokens (`put`) and `end()` at the end. transformers forwards it only
            on the plain `generate(penalty_alpha=...)` route, not to `custom_generate` callables.
        contrastive_layout (`str | None`, *optional*): `None` (automatic), `"shared"` or `"expand"` (see the module docstring);
            both give the same tokens.
        **model_kwargs (`Any`): what `generate` prepared: `attention_mask`, `cache`, `encoder_outputs`, ...

    Returns:
        [B, T + new] token ids, or a `GenerateDecoderOnlyOutput` / `GenerateEncoderDecoderOutput` with
        `scores` (processed logits per step), `logits` (raw), the winners' `hidden_states` per step
        (all layers) and the cache, when `return_dict_in_generate=True`.
    """
    penalty_alpha, top_k = validate_contrastive_arguments(
        generation_config.penalty_alpha, generation_config.top_k
    )
    if model_kwargs.get("use_cache") is False or generation_config.use_cache is False:
        raise ValueError("Contrastive search needs the key/value cache; got use_cache=False.")
    if model_kwargs.get("inputs_embeds") is not None and not model.config.is_encoder_decoder:
        raise ValueError(
            "Contrastive search with `inputs_embeds` is not supported; pass `input_ids` instead."
        )
    _precheck(model, model_kwargs)
    if contrastive_layout not in (None, "shared", "expand"):
        raise ValueError(
            f"`contrastive_layout` must be None, 'shared' or 'expand', got {contrastive_layout!r}."
        )

    want_attn = bool(generation_config.return_dict_in_generate and generation_config.output_attentions)
    # What to output is read from the generation config; the loops set these per forward themselves.
    for key in ("output_attentions", "output_hidden_states", "return_dict"):
        model_kwargs.pop(key, None)
    layout = contrastive_layout
    if layout is None:
        extra = {k for k, v in model_kwargs.items() if v is not None and k not in _SHARED_LAYOUT_KWARGS}
        if model.config.is_encoder_decoder or extra or want_attn:
            layout = "expand"
        else:
            layout = _probe_shared_layout(model)[0]
    elif layout == "shared" and model.config.is_encoder_decoder:
        raise ValueError(
            "The 'shared' layout is for decoder-only models; use 'expand' (or None) for encoder-decoder."
        )

    if layout == "shared":
        return _shared_loop(
            model,
            input_ids,
            logits_processor,
            stopping_criteria,
            generation_config,
            penalty_alpha,
            top_k,
            synced_gpus,
            streamer,
            model_kwargs,
        )
    return _expand_loop(
        model,
        input_ids,
        logits_processor,
        stopping_criteria,
        generation_config,
        penalty_alpha,
        top_k,
        synced_gpus,
        streamer,
        model_kwargs,
    )


class _Recorder:
    """Collects what `return_dict_in_generate` asked for, step by step."""

    def __init__(self, config: GenerationConfig) -> None:
        on = bool(config.return_dict_in_generate)
        self.on = on
        self.scores: tuple | None = () if on and config.output_scores else None
        self.logits: tuple | None = () if on and config.output_logits else None
        self.hidden: tuple | None = () if on and config.output_hidden_states else None
        self.attn: tuple | None = () if on and config.output_attentions else None
        self.cross: tuple | None = () if on and config.output_attentions else None

    def step(self, raw: torch.Tensor, processed: torch.Tensor) -> None:
        if self.scores is not None:
            self.scores += (processed,)
        if self.logits is not None:
            self.logits += (raw,)


def _finish_step(
    input_ids: torch.Tensor,
    next_tokens: torch.Tensor,
    unfinished: torch.Tensor,
    pad_token_id: torch.Tensor | None,
    has_eos: bool,
    stopping_criteria: StoppingCriteriaList,
    scores: tuple | None,
    streamer: Any | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if has_eos:
        if pad_token_id is None:
            raise ValueError("An EOS stopping criterion needs `pad_token_id` to fill finished rows; set it.")
        next_tokens = next_tokens * unfinished + pad_token_id.to(next_tokens.device) * (1 - unfinished)
    input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=-1)
    if streamer is not None:
        streamer.put(next_tokens.cpu())
    unfinished = unfinished & ~stopping_criteria(input_ids, scores)
    return input_ids, next_tokens, unfinished


def _all_done(unfinished: torch.Tensor, synced_gpus: bool) -> bool:
    done = bool(unfinished.max() == 0)
    if synced_gpus and torch.distributed.is_available() and torch.distributed.is_initialized():
        flag = torch.tensor(0.0 if done else 1.0, device=unfinished.device)
        torch.distributed.all_reduce(flag)
        return bool(flag.item() == 0.0)
    return done


def _shared_loop(
    model: nn.Module,
    input_ids: torch.Tensor,
    logits_processor: LogitsProcessorList,
    stopping_criteria: StoppingCriteriaList,
    config: GenerationConfig,
    alpha: float,
    k: int,
    synced_gpus: bool,
    streamer: Any | None,
    model_kwargs: dict[str, Any],
) -> GenerateDecoderOnlyOutput | torch.LongTensor:
    body = model.get_decoder()
    head = _Head(model)
    rec = _Recorder(config)
    want_hidden = rec.hidden is not None
    batch, length = input_ids.shape
    device = input_ids.device
    cache = model_kwargs.get("cache")
    if cache is None:
        cache = DynamicCache(config=model.config.get_text_config(decoder=True))
    if cache.get_seq_length() != 0:
        raise ValueError(
            "Contrastive search starts from an empty cache; continuing from a filled cache is not supported."
        )

    attn2d = model_kwargs.get("attention_mask")
    prefix_mask = (
        torch.ones(batch, length, dtype=torch.bool, device=device)
        if attn2d is None
        else attn2d.bool().to(device)
    )
    position_ids = model_kwargs.get("position_ids")
    if position_ids is None or position_ids.shape[-1] != length:
        position_ids = (prefix_mask.long().cumsum(-1) - 1).clamp_min(0)
    position_ids = position_ids.expand(batch, -1).to(device)

    out = body(
        input_ids=input_ids,
        attention_mask=attn2d,
        position_ids=position_ids,
        cache=cache,
        use_cache=True,
        output_hidden_states=want_hidden,
        return_dict=True,
    )
    cache = out.cache if getattr(out, "cache", None) is not None else cache
    _check_cache(model, cache)
    last = out.last_hidden_state
    context = _normalize_fp32(last)  # [B, T, D]
    logits = head(last[:, -1]).to(dtype=torch.float32, device=device)
    if want_hidden:
        rec.hidden += (out.hidden_states,)
    del out
    next_pos = position_ids[:, -1] + 1

    pad_token_id = config._pad_token_tensor
    has_eos = any(hasattr(c, "eos_token_id") for c in stopping_criteria)
    unfinished = torch.ones(batch, dtype=torch.long, device=device)
    rows = torch.arange(batch, device=device)
    step_hidden: tuple | None = None  # the previous winner's states, recorded with the step they feed
    while True:
        processed = logits_processor(input_ids, logits)
        if rec.on:
            rec.step(logits, processed)
            if step_hidden is not None:
                rec.hidden += (step_hidden,)
        probs = processed.softmax(dim=-1)
        top_k_probs, top_k_ids = probs.topk(k, dim=-1)  # [B, K]

        prefix_len = cache.get_seq_length()
        cand = body(
            input_ids=top_k_ids,
            attention_mask=_candidate_mask(prefix_mask, k, model.dtype),
            position_ids=next_pos[:, None].expand(batch, k),
            cache=cache,
            use_cache=True,
            output_hidden_states=want_hidden,
            return_dict=True,
        )
        cand_h = cand.last_hidden_state  # [B, K, D]
        cand_norm = _normalize_fp32(cand_h)
        penalty = _degeneration_penalty(context, prefix_mask, cand_norm)
        _, winner = _select_winner(top_k_probs, penalty, alpha)
        _keep_candidate(cache, prefix_len, winner)

        next_tokens = top_k_ids[rows, winner]
        win_h = cand_h[rows, winner]  # [B, D]
        logits = head(win_h).to(dtype=torch.float32, device=device)
        context = torch.cat([context, cand_norm[rows, winner][:, None]], dim=1)
        prefix_mask = torch.cat([prefix_mask, prefix_mask.new_ones(batch, 1)], dim=1)
        next_pos = next_pos + 1
        if want_hidden:
            step_hidden = _stack_hidden(cand.hidden_states, rows, winner)
        del cand

        input_ids, next_tokens, unfinished = _finish_step(
            input_ids, next_tokens, unfinished, pad_token_id, has_eos, stopping_criteria, rec.scores, streamer
        )
        if _all_done(unfinished, synced_gpus):
            break

    if streamer is not None:
        streamer.end()
    if not rec.on:
        return input_ids
    # The cache holds the last token's entry; drop it so it matches `sequences[:, :-1]` like greedy's cache.
    cache.crop(-1)
    return GenerateDecoderOnlyOutput(
        sequences=input_ids,
        scores=rec.scores,
        logits=rec.logits,
        attentions=None,
        hidden_states=rec.hidden,
        cache=cache,
    )


def _expand_loop(
    model: nn.Module,
    input_ids: torch.Tensor,
    logits_processor: LogitsProcessorList,
    stopping_criteria: StoppingCriteriaList,
    config: GenerationConfig,
    alpha: float,
    k: int,
    synced_gpus: bool,
    streamer: Any | None,
    model_kwargs: dict[str, Any],
) -> GenerateDecoderOnlyOutput | GenerateEncoderDecoderOutput | torch.LongTensor:
    is_enc_dec = bool(model.config.is_encoder_decoder)
    rec = _Recorder(config)
    want_hidden = rec.hidden is not None
    want_attn = rec.attn is not None
    batch, length = input_ids.shape
    device = input_ids.device
    model_kwargs = dict(model_kwargs)
    model_kwargs["use_cache"] = True
    # Only the last position's logits are needed, at prefill and for the one-token candidate steps.
    if model._supports_logits_to_keep():
        model_kwargs["logits_to_keep"] = 1
    if model_kwargs.get("cache") is None:
        model_kwargs["cache"] = (
            EncoderDecoderCache(DynamicCache(), DynamicCache()) if is_enc_dec else DynamicCache()
        )
    if model_kwargs["cache"].get_seq_length() != 0:
        raise ValueError(
            "Contrastive search starts from an empty cache; continuing from a filled cache is not supported."
        )

    encoder_attentions = encoder_hidden = None
    if rec.on and is_enc_dec:
        enc = model_kwargs["encoder_outputs"]
        encoder_attentions = enc.get("attentions") if config.output_attentions else None
        encoder_hidden = enc.get("hidden_states") if config.output_hidden_states else None

    pos = model_kwargs.get("position_ids")
    if isinstance(pos, torch.Tensor) and pos.ndim == 2 and pos.shape[0] == 1 and batch > 1:
        model_kwargs["position_ids"] = pos.expand(batch, -1).clone()
    mask_key = "decoder_attention_mask" if is_enc_dec else "attention_mask"
    mask0 = model_kwargs.get(mask_key)
    prefix_mask = (
        torch.ones(batch, length, dtype=torch.bool, device=device)
        if mask0 is None
        else mask0.bool().to(device)
    )

    inputs = model.prepare_inputs_for_generation(input_ids, is_first_iteration=True, **model_kwargs)
    out = model(**inputs, return_dict=True, output_hidden_states=True, output_attentions=want_attn)
    hidden = out.decoder_hidden_states if is_enc_dec else out.hidden_states
    context = _normalize_fp32(hidden[-1])
    logits = out.logits[:, -1].to(dtype=torch.float32, device=device)
    model_kwargs = model._update_model_kwargs_for_generation(out, model_kwargs, is_encoder_decoder=is_enc_dec)
    cache = model_kwargs["cache"]
    _check_cache(model, cache)
    if rec.on:
        if want_hidden:
            rec.hidden += (hidden,)
        if want_attn:
            rec.attn += (out.decoder_attentions,) if is_enc_dec else (out.attentions,)
            if is_enc_dec:
                rec.cross += (out.cross_attentions,)
    del out, hidden

    # Everything but the decoder self-attention cache is expanded k-fold once and kept that way: the k copies
    # of a row are identical, so selecting and re-expanding them every step would only copy memory.
    _, model_kwargs = model._expand_inputs_for_generation(
        input_ids=None, expand_size=k, is_encoder_decoder=is_enc_dec, **model_kwargs
    )
    if is_enc_dec:
        cache.cross_attention_cache.batch_repeat_interleave(k)
        self_cache = cache.self_attention_cache
    else:
        self_cache = cache

    pad_token_id = config._pad_token_tensor
    has_eos = any(hasattr(c, "eos_token_id") for c in stopping_criteria)
    unfinished = torch.ones(batch, dtype=torch.long, device=device)
    rows = torch.arange(batch, device=device)
    pending: dict[str, Any] = {}
    while True:
        processed = logits_processor(input_ids, logits)
        if rec.on:
            rec.step(logits, processed)
            if pending:
                if want_hidden:
                    rec.hidden += (pending["hidden"],)
                if want_attn:
                    rec.attn += (pending["attn"],)
                    if is_enc_dec:
                        rec.cross += (pending["cross"],)
        probs = processed.softmax(dim=-1)
        top_k_probs, top_k_ids = probs.topk(k, dim=-1)

        self_cache.batch_repeat_interleave(k)
        cand_inputs = model.prepare_inputs_for_generation(
            top_k_ids.reshape(-1, 1), next_sequence_length=1, **model_kwargs
        )
        cand = model(**cand_inputs, return_dict=True, output_hidden_states=True, output_attentions=want_attn)
        cand_hidden = cand.decoder_hidden_states if is_enc_dec else cand.hidden_states
        cand_norm = _normalize_fp32(cand_hidden[-1][:, -1]).view(batch, k, -1)
        penalty = _degeneration_penalty(context, prefix_mask, cand_norm)
        _, winner = _select_winner(top_k_probs, penalty, alpha)
        flat = (rows * k + winner).to(device)
        self_cache.batch_select_indices(flat)

        next_tokens = top_k_ids[rows, winner]
        logits = cand.logits[:, -1].to(dtype=torch.float32, device=device).view(batch, k, -1)[rows, winner]
        context = torch.cat([context, cand_norm[rows, winner][:, None]], dim=1)
        prefix_mask = torch.cat([prefix_mask, prefix_mask.new_ones(batch, 1)], dim=1)
        if rec.on:
            if want_hidden:
                pending["hidden"] = tuple(h[flat] for h in cand_hidden)
            if want_attn:
                pending["attn"] = tuple(
                    a[flat] for a in (cand.decoder_attentions if is_enc_dec else cand.attentions)
                )
                if is_enc_dec:
                    pending["cross"] = tuple(a[flat] for a in cand.cross_attentions)
        # Grow the k-fold attention mask / position ids by one position (the cache itself is already updated).
        model_kwargs = model._update_model_kwargs_for_generation(
            cand, model_kwargs, is_encoder_decoder=is_enc_dec
        )
        model_kwargs["cache"] = cache
        del cand, cand_hidden, cand_inputs

        input_ids, next_tokens, unfinished = _finish_step(
            input_ids, next_tokens, unfinished, pad_token_id, has_eos, stopping_criteria, rec.scores, streamer
        )
        if _all_done(unfinished, synced_gpus):
            break

    if streamer is not None:
        streamer.end()
    if not rec.on:
        return input_ids
    self_cache.crop(-1)
    if is_enc_dec:
        cache.cross_attention_cache.batch_select_indices(torch.arange(batch, device=device) * k)
        return GenerateEncoderDecoderOutput(
            sequences=input_ids,
            scores=rec.scores,
            logits=rec.logits,
            encoder_attentions=encoder_attentions,
            encoder_hidden_states=encoder_hidden,
            decoder_attentions=rec.attn,
            cross_attentions=rec.cross,
            decoder_hidden_states=rec.hidden,
            cache=cache,
        )
    return GenerateDecoderOnlyOutput(
        sequences=input_ids,
        scores=rec.scores,
        logits=rec.logits,
        attentions=rec.attn,
        hidden_states=rec.hidden,
        cache=cache,
    )
