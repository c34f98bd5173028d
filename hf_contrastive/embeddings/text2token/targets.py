"""Target token distributions of Text2Token (An et al. 2025): one sparse distribution over the vocabulary per
text, the supervision of the token target prediction task.

Stage 1 (data-driven, [`tfidf_targets`]): the text's own meaningful tokens, weighted by tf-idf over the training
corpus and computed with the model's tokenizer. For token `t` of text `d` in a corpus of `N` texts,

    w(t, d) = tf(t, d) * idf(t),    idf(t) = ln((1 + N) / (1 + df(t))) + 1,

with `tf` the count of `t` in `d` (or `1 + ln(count)` with `sublinear_tf`) and `df(t)` the number of texts that
hold `t`; special tokens, stop words and tokens without a letter or digit are left out, and the weights are
divided by their sum.

Stage 2 (model-derived, [`model_derived_targets`]): tokens the model itself associates with the text, beyond
its surface tokens. The text is embedded by the encoder, projected onto the vocabulary (the LM head, or the
tied input embeddings) and the `top_k` most probable tokens, renormalised, are the target. With the stage-1
model this is the model's own vocabulary distribution for the text, sharpened to its top tokens; with
`source="token_states"` the vocabulary distributions of every token state of the text are averaged instead
(the backbone's next-token associations at each position). [`mix_targets`] blends the two kinds.

The paper describes the two kinds of key tokens (meaningful tokens of the text; semantically derived tokens
beyond it, constructed from the LLM backbone) and trains on them in two stages with a KL objective. Its exact
filtering rules and the size of the model-derived targets are not reproduced here: the stop-word list, the
letter-or-digit rule and `top_k=20` are this library's choices, and `source="pooled"` (the stage-1 model's own
prediction from the text representation) is the reading used by the `text2token` recipe.

A target is a [`TokenTarget`]: unique token ids and positive weights that sum to one. [`token_target_dataset`]
puts texts and targets into a `datasets.Dataset` with `text`, `target_ids` and `target_weights` columns, the
layout [`Text2TokenTrainer`] trains on.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import torch
from datasets import Dataset

from hf_contrastive.core.boundary import cap_max_length, position_limit
from hf_contrastive.embeddings.text2token.projection import VocabularyProjection, unwrap_encoder

logger = logging.getLogger(__name__)

__all__ = [
    "ENGLISH_STOP_WORDS",
    "MODEL_TARGET_SOURCES",
    "TokenTarget",
    "check_token_targets",
    "mix_targets",
    "model_derived_targets",
    "stop_token_ids",
    "tfidf_targets",
    "token_target_dataset",
]

ENGLISH_STOP_WORDS: frozenset[str] = frozenset(
    """
    a about above after again against all am an and any are as at be because been before being below between
    both but by can could did do does doing down during each few for from further had has have having he her
    here hers herself him himself his how i if in into is it its itself just me more most my myself no nor not
    now of off on once only or other our ours ourselves out over own same she should so some such than that the
    their theirs them themselves then there these they this those through to too under until up very was we
    were what when where which while who whom why will with would you your yours yourself yourselves
    """.split()
)
"""Common English function words, left out of data-driven targets with `stop_words="english"`."""

MODEL_TARGET_SOURCES = ("pooled", "token_states")
"""What [`model_derived_targets`] projects onto the vocabulary: the pooled text representation, or each token
state (averaged)."""


class TokenTarget(NamedTuple):
    """One text's target distribution: unique token `ids` and their `weights` (positive, summing to one), in
    decreasing order of weight."""

    ids: list[int]
    weights: list[float]


# -- checks ------------------------------------------------------------------------------------------------------
def _check_texts(texts: Any, owner: str) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"{owner} expects a list of strings, got {type(texts).__name__}.")
    texts = list(texts)
    if not texts:
        raise ValueError(f"{owner} got no texts: expected a non-empty list of strings.")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{owner} expects strings: text {i} is a {type(text).__name__}.")
    empty = [i for i, text in enumerate(texts) if not text.strip()]
    if empty:
        raise ValueError(
            f"{owner}: {len(empty)} empty or blank text(s) (first at index {empty[:5]}); every text needs at "
            "least one token to predict. Remove them first."
        )
    return texts


def check_token_targets(
    ids: Sequence[Sequence[int]],
    weights: Sequence[Sequence[float]],
    vocab_size: int | None = None,
    owner: str = "token targets",
    tolerance: float = 1e-4,
) -> None:
    """Refuse malformed sparse targets, naming the first bad row.

    Args:
        ids (`Sequence[Sequence[int]]`):
            Token ids of each row.
        weights (`Sequence[Sequence[float]]`):
            Their weights, one per id.
        vocab_size (`int`, *optional*):
            Ids must lie in `[0, vocab_size)`; `None` checks only that they are non-negative.
        owner (`str`, *optional*, defaults to `"token targets"`):
            Who is checking, for the messages.
        tolerance (`float`, *optional*, defaults to `1e-4`):
            How far a row's weights may sum from one (rounding of stored floats).

    Raises:
        `ValueError`: different numbers of rows, a row whose ids and weights differ in length, an empty row, a
            repeated id, an id outside the vocabulary, a negative or non-finite weight, or weights that do not sum
            to one.
    """
    if len(ids) != len(weights):
        raise ValueError(f"{owner}: {len(ids)} rows of target ids but {len(weights)} rows of target weights.")
    for row, (row_ids, row_weights) in enumerate(zip(ids, weights)):
        if len(row_ids) != len(row_weights):
            raise ValueError(
                f"{owner}: row {row} has {len(row_ids)} target ids but {len(row_weights)} target weights; "
                "expected one weight per id."
            )
        if not row_ids:
            raise ValueError(f"{owner}: row {row} has no target tokens; expected at least one (id, weight).")
        if len(set(row_ids)) != len(row_ids):
            repeated = sorted(t for t, c in Counter(row_ids).items() if c > 1)
            raise ValueError(f"{owner}: row {row} repeats target id(s) {repeated[:5]}; ids must be unique.")
        for t in row_ids:
            if isinstance(t, bool) or int(t) != t or t < 0 or (vocab_size is not None and t >= vocab_size):
                limit = f"[0, {vocab_size})" if vocab_size is not None else "the non-negative integers"
                raise ValueError(
                    f"{owner}: row {row} has target id {t!r} outside the vocabulary; expected ids in {limit}."
                )
        bad = [w for w in row_weights if not (math.isfinite(w) and w >= 0)]
        if bad:
            raise ValueError(f"{owner}: row {row} has weight {bad[0]!r}; expected finite weights >= 0.")
        total = math.fsum(row_weights)
        if abs(total - 1.0) > tolerance:
            raise ValueError(
                f"{owner}: the weights of row {row} sum to {total:.6g}; a target is a distribution (sum 1)."
            )


# -- stage 1: data-driven targets ---------------------------------------------------------------------------------
def stop_token_ids(tokenizer: Any, words: Iterable[str]) -> set[int]:
    """Token ids of stop words: each word as the tokenizer writes it alone and after a space, when that is one
    token. A word the tokenizer splits into several tokens excludes none (its pieces may belong to other words).

    Args:
        tokenizer (`PreTrainedTokenizerBase`):
            The model's tokenizer.
        words (`Iterable[str]`):
            The stop words; also tried capitalised.
    """
    found: set[int] = set()
    for word in words:
        for form in {word, word.capitalize()}:
            for text in (form, " " + form):
                pieces = tokenizer(text, add_special_tokens=False)["input_ids"]
                if len(pieces) == 1:
                    found.add(int(pieces[0]))
    return found


def _has_alphanumeric(tokenizer: Any, token_id: int) -> bool:
    return any(ch.isalnum() for ch in tokenizer.decode([token_id]))


def tfidf_targets(
    texts: Sequence[str],
    tokenizer: Any,
    *,
    stop_words: Iterable[str] | str | None = None,
    exclude_token_ids: Iterable[int] | None = None,
    exclude_special_tokens: bool = True,
    require_alphanumeric: bool = True,
    max_df: float = 1.0,
    sublinear_tf: bool = False,
    smooth_idf: bool = True,
    top_k: int | None = None,
    max_length: int | None = None,
    allow_empty: bool = False,
) -> list[TokenTarget]:
    r"""Data-driven targets (Text2Token stage 1): the tf-idf weighted tokens of each text, as distributions.

    Document frequencies are counted over `texts` (the training corpus), in tokens of `tokenizer`. Weight of
    token `t` in text `d`: `tf(t, d) * idf(t)`, `idf(t) = ln((1 + N) / (1 + df(t))) + 1` (`smooth_idf`, as
    scikit-learn) or `ln(N / df(t)) + 1`; `tf` is the count, or `1 + ln(count)` with `sublinear_tf`. The weights
    of a text are divided by their sum.

    Args:
        texts (`Sequence[str]`):
            The corpus; every text must hold some non-blank character.
        tokenizer (`PreTrainedTokenizerBase`):
            The tokenizer of the model that will be trained (its ids are the targets).
        stop_words (`Iterable[str] | str`, *optional*):
            Words left out ([`stop_token_ids`]); `"english"` takes [`ENGLISH_STOP_WORDS`].
        exclude_token_ids (`Iterable[int]`, *optional*):
            More token ids to leave out.
        exclude_special_tokens (`bool`, *optional*, defaults to `True`):
            Leave out the tokenizer's special tokens (`[CLS]`, `<|im_end|>`, ...).
        require_alphanumeric (`bool`, *optional*, defaults to `True`):
            Leave out tokens whose text has no letter or digit (punctuation, lone spaces).
        max_df (`float`, *optional*, defaults to `1.0`):
            Leave out tokens found in more than this fraction of the texts (corpus-specific stop tokens).
        sublinear_tf (`bool`, *optional*, defaults to `False`):
            Use `1 + ln(count)` as the term frequency.
        smooth_idf (`bool`, *optional*, defaults to `True`):
            Add one to the document counts, as if one extra text held every token.
        top_k (`int`, *optional*):
            Keep the `top_k` heaviest tokens of each text (renormalised); `None` keeps all.
        max_length (`int`, *optional*):
            Count only the first `max_length` tokens of each text (the length the model is trained with).
        allow_empty (`bool`, *optional*, defaults to `False`):
            A text left with no token after the exclusions gets an empty target (dropped, and counted, by
            [`token_target_dataset`]) instead of raising.

    Returns:
        `list[TokenTarget]`: one per text, in order; ids by decreasing weight (ties: first occurrence first).

    Raises:
        `ValueError`: no texts, a blank text, a bad setting, or (without `allow_empty`) a text with no token left.
    """
    texts = _check_texts(texts, "tfidf_targets")
    if tokenizer is None or not callable(tokenizer):
        raise TypeError("tfidf_targets needs the model's tokenizer (a transformers tokenizer).")
    if not (isinstance(max_df, (int, float)) and 0.0 < max_df <= 1.0):
        raise ValueError(f"max_df is a fraction of the texts in (0, 1], got {max_df!r}.")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}.")
    if max_length is not None and (
        isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1
    ):
        raise ValueError(f"max_length must be a positive integer or None, got {max_length!r}.")
    if isinstance(stop_words, str):
        if stop_words != "english":
            raise ValueError(f"stop_words takes a list of words or 'english', got {stop_words!r}.")
        stop_words = ENGLISH_STOP_WORDS

    excluded: set[int] = {int(t) for t in exclude_token_ids or ()}
    if exclude_special_tokens:
        excluded.update(int(t) for t in getattr(tokenizer, "all_special_ids", []) or [])
    if stop_words:
        excluded.update(stop_token_ids(tokenizer, stop_words))

    encoded = tokenizer(
        texts, add_special_tokens=False, truncation=max_length is not None, max_length=max_length
    )["input_ids"]
    keep_cache: dict[int, bool] = {}

    def keep(token_id: int) -> bool:
        if token_id not in keep_cache:
            keep_cache[token_id] = token_id not in excluded and (
                not require_alphanumeric or _has_alphanumeric(tokenizer, token_id)
            )
        return keep_cache[token_id]

    counts = [Counter(t for t in ids if keep(t)) for ids in encoded]
    first_seen = [{t: i for i, t in reversed(list(enumerate(ids)))} for ids in encoded]
    n = len(texts)
    df: Counter[int] = Counter()
    for c in counts:
        df.update(c.keys())
    too_common = {t for t, d in df.items() if d / n > max_df}

    targets: list[TokenTarget] = []
    empty: list[int] = []
    for row, (c, order) in enumerate(zip(counts, first_seen)):
        scored = []
        for t, count in c.items():
            if t in too_common:
                continue
            tf = 1.0 + math.log(count) if sublinear_tf else float(count)
            idf = math.log((1 + n) / (1 + df[t])) + 1.0 if smooth_idf else math.log(n / df[t]) + 1.0
            scored.append((-(tf * idf), order[t], t))
        if not scored:
            empty.append(row)
            targets.append(TokenTarget([], []))
            continue
        scored.sort()
        if top_k is not None:
            scored = scored[:top_k]
        total = math.fsum(-s for s, _, _ in scored)
        targets.append(TokenTarget([t for _, _, t in scored], [-s / total for s, _, _ in scored]))
    if empty and not allow_empty:
        raise ValueError(
            f"tfidf_targets: {len(empty)} text(s) have no token left after leaving out special tokens, stop words "
            f"and tokens without letters or digits (first at index {empty[:5]}: {texts[empty[0]]!r}). Remove them, "
            "or pass allow_empty=True and let token_target_dataset drop them."
        )
    return targets


# -- stage 2: model-derived targets -------------------------------------------------------------------------------
@torch.no_grad()
def model_derived_targets(
    encoder: Any,
    texts: Sequence[str],
    *,
    tokenizer: Any = None,
    projection: VocabularyProjection | None = None,
    source: str = "pooled",
    top_k: int = 20,
    temperature: float = 1.0,
    exclude_token_ids: Iterable[int] | None = None,
    exclude_special_tokens: bool = True,
    batch_size: int = 32,
    max_length: int | None = None,
) -> list[TokenTarget]:
    r"""Model-derived targets (Text2Token stage 2): the tokens the model associates with each text.

    With `source="pooled"` the target of a text is `softmax(pooled @ W^T / temperature)`, its `top_k` tokens
    renormalised, where `pooled` is the encoder's pooled representation and `W` the vocabulary projection. With
    `source="token_states"` the softmax is taken at every real token state of the text and averaged over them
    before the top-k. Excluded ids (special tokens, `exclude_token_ids`) get no mass.

    Args:
        encoder (`SentenceEncoder`):
            The encoder (after stage 1 in the two-stage recipe; `peft`- or DDP-wrapped ones are unwrapped).
        texts (`Sequence[str]`):
            The texts; none may be blank.
        tokenizer (`PreTrainedTokenizerBase`, *optional*):
            Defaults to the encoder's tokenizer.
        projection (`VocabularyProjection`, *optional*):
            The vocabulary projection; defaults to the encoder's tied input embeddings.
        source (`str`, *optional*, defaults to `"pooled"`):
            One of `MODEL_TARGET_SOURCES`.
        top_k (`int`, *optional*, defaults to `20`):
            Tokens kept per text.
        temperature (`float`, *optional*, defaults to `1.0`):
            Divides the logits before the softmax (below 1 sharpens; the kept tokens do not change).
        exclude_token_ids (`Iterable[int]`, *optional*):
            Ids never used as targets.
        exclude_special_tokens (`bool`, *optional*, defaults to `True`):
            Also exclude the tokenizer's special tokens.
        batch_size (`int`, *optional*, defaults to `32`):
            Texts per forward pass.
        max_length (`int`, *optional*):
            Truncation length; defaults to the encoder's `max_seq_length`, capped at its position limit.

    Returns:
        `list[TokenTarget]`: one per text, ids by decreasing probability.
    """
    texts = _check_texts(texts, "model_derived_targets")
    if source not in MODEL_TARGET_SOURCES:
        raise ValueError(f"source must be one of {MODEL_TARGET_SOURCES}, got {source!r}.")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}.")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    base = unwrap_encoder(encoder)
    tokenizer = tokenizer if tokenizer is not None else getattr(base, "tokenizer", None)
    if tokenizer is None:
        raise ValueError(
            "model_derived_targets needs a tokenizer: pass tokenizer= or attach one to the encoder."
        )
    projection = projection if projection is not None else VocabularyProjection()
    weight, _ = projection.weights_for(base)
    vocab = weight.shape[0]
    excluded = {int(t) for t in exclude_token_ids or ()}
    if exclude_special_tokens:
        excluded.update(int(t) for t in getattr(tokenizer, "all_special_ids", []) or [])
    bad = sorted(t for t in excluded if not 0 <= t < vocab)
    if bad:
        raise ValueError(f"exclude_token_ids {bad[:5]} lie outside the vocabulary projection's {vocab} rows.")
    if len(excluded) >= vocab:
        raise ValueError("Every token of the vocabulary is excluded: nothing is left to be a target.")
    k = min(top_k, vocab - len(excluded))
    if max_length is None:
        max_length = getattr(base.config, "max_seq_length", None)
    max_length = cap_max_length(max_length, position_limit(base.config), "max_length")
    device = weight.device
    mask = torch.zeros(vocab, dtype=torch.bool, device=device)
    if excluded:
        mask[torch.tensor(sorted(excluded), device=device)] = True

    was_training = base.training
    base.eval()
    targets: list[TokenTarget] = []
    try:
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=max_length is not None,
                max_length=max_length,
                return_tensors="pt",
            )
            batch = {k_: v.to(device) for k_, v in batch.items()}
            out = base(**batch)
            if source == "pooled":
                logits = projection(out.pooled, base).float() / temperature
                probs = logits.masked_fill(mask, float("-inf")).softmax(dim=-1)
            else:
                attention = batch["attention_mask"]
                rows = []
                for states, row_mask in zip(out.last_hidden_state, attention):
                    logits = projection(states[row_mask.bool()], base).float() / temperature
                    rows.append(logits.masked_fill(mask, float("-inf")).softmax(dim=-1).mean(dim=0))
                probs = torch.stack(rows)
            top = probs.topk(k, dim=-1)
            values = top.values / top.values.sum(dim=-1, keepdim=True)
            for ids, ws in zip(top.indices.tolist(), values.tolist()):
                targets.append(TokenTarget(ids, ws))
    finally:
        base.train(was_training)
    return targets


def mix_targets(
    first: Sequence[TokenTarget], second: Sequence[TokenTarget], second_weight: float
) -> list[TokenTarget]:
    """Blend two sets of targets row by row: `(1 - second_weight) * first + second_weight * second`.

    Args:
        first (`Sequence[TokenTarget]`):
            For example the model-derived targets.
        second (`Sequence[TokenTarget]`):
            For example the data-driven targets of the same texts.
        second_weight (`float`):
            In `[0, 1]`.

    Returns:
        `list[TokenTarget]`: the union of each row's ids, by decreasing weight.
    """
    if len(first) != len(second):
        raise ValueError(
            f"mix_targets: {len(first)} targets and {len(second)} targets; expected one per text each."
        )
    if not (isinstance(second_weight, (int, float)) and 0.0 <= second_weight <= 1.0):
        raise ValueError(f"second_weight must be in [0, 1], got {second_weight!r}.")
    out = []
    for a, b in zip(first, second):
        mixed: dict[int, float] = {}
        for ids, weights, scale in (
            (a.ids, a.weights, 1.0 - second_weight),
            (b.ids, b.weights, second_weight),
        ):
            for t, w in zip(ids, weights):
                mixed[t] = mixed.get(t, 0.0) + scale * w
        ranked = sorted(((w, t) for t, w in mixed.items() if w > 0), key=lambda x: (-x[0], x[1]))
        total = math.fsum(w for w, _ in ranked)
        out.append(TokenTarget([t for _, t in ranked], [w / total for w, _ in ranked]))
    return out


# -- dataset ------------------------------------------------------------------------------------------------------
def token_target_dataset(
    texts: Sequence[str],
    targets: Sequence[TokenTarget],
    *,
    text_column: str = "text",
    vocab_size: int | None = None,
) -> Dataset:
    """Texts and their targets as a `datasets.Dataset` (`text`, `target_ids`, `target_weights`), the layout of
    [`Text2TokenTrainer`]. Texts with an empty target (see `allow_empty` of [`tfidf_targets`]) are dropped, and
    their number is logged.

    Args:
        texts (`Sequence[str]`):
            The texts.
        targets (`Sequence[TokenTarget]`):
            One target per text.
        text_column (`str`, *optional*, defaults to `"text"`):
            Name of the text column.
        vocab_size (`int`, *optional*):
            Check that every id lies in `[0, vocab_size)`.

    Raises:
        `ValueError`: different numbers of texts and targets, malformed targets, or no row left.
    """
    texts = _check_texts(texts, "token_target_dataset")
    targets = list(targets)
    if len(texts) != len(targets):
        raise ValueError(
            f"token_target_dataset: {len(texts)} texts but {len(targets)} targets; expected one target per text."
        )
    kept = [i for i, t in enumerate(targets) if len(t.ids) > 0]
    if len(kept) < len(texts):
        logger.warning(
            "token_target_dataset: dropped %d of %d texts whose target is empty (no meaningful token).",
            len(texts) - len(kept),
            len(texts),
        )
    if not kept:
        raise ValueError("token_target_dataset: every target is empty; there is nothing to train on.")
    ids = [list(map(int, targets[i].ids)) for i in kept]
    weights = [list(map(float, targets[i].weights)) for i in kept]
    check_token_targets(ids, weights, vocab_size, owner="token_target_dataset")
    return Dataset.from_dict(
        {text_column: [texts[i] for i in kept], "target_ids": ids, "target_weights": weights}
    )
