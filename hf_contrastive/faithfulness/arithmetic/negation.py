"""Task-vector negation for faithful summarisation (Ilharco et al. 2023, applied as in span-level fine-tuning).

Fine-tune on unfaithful summaries to get `theta_h`; `tau = theta_h - theta_0`; the edited model is
`theta* = theta_0 - lam * tau` with `lam` in `[0, 1]` chosen on held-out data. With LoRA both sides are
adapters and the edit is an exact adapter (`cat` combination, see `hf_contrastive.faithfulness.arithmetic.lora`):
`-lam * halluc` on the base, or `sft - lam * halluc` when a faithful SFT adapter is the starting point.

`lam` is the one with the lowest validation log-probability of unfaithful spans among those whose
faithful-reference perplexity stays within `max_perplexity_increase` of `lam = 0`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from hf_contrastive.core.hub.card import ModelCardInfo
from hf_contrastive.core.hub.mixin import save_with_card
from hf_contrastive.faithfulness.arithmetic.lora import combine_adapters
from hf_contrastive.faithfulness.evaluation import evaluate_faithfulness

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_LAMBDAS",
    "NEGATION_CITATION",
    "halluc_features",
    "save_negated_adapter",
    "select_negation_scale",
]

NEGATION_CITATION = """@inproceedings{ilharco2023editing,
  title     = {Editing Models with Task Arithmetic},
  author    = {Ilharco, Gabriel and Ribeiro, Marco Tulio and Wortsman, Mitchell and Gururangan, Suchin and
               Schmidt, Ludwig and Hajishirzi, Hannaneh and Farhadi, Ali},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2023}
}"""

DEFAULT_LAMBDAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def halluc_features(
    builder: Any, examples: Sequence[Any], target: str = "summary"
) -> list[dict[str, list[int]]]:
    """Features to fine-tune `theta_h` on unfaithful content, with plain NLL (no span term).

    `target="summary"`: every token of the unfaithful summaries is a label; `"spans"`: only the tokens of
    the unfaithful spans are (a more targeted `tau`). The `unfaithful_mask` is cleared so the `nll`
    objective of the span trainer counts all labels.
    """
    if target not in ("summary", "spans"):
        raise ValueError(f"`target` must be 'summary' or 'spans', got {target!r}.")
    rows = []
    for ex in examples:
        row = builder(ex)
        if target == "spans":
            row["labels"] = [t if m else -100 for t, m in zip(row["labels"], row["unfaithful_mask"])]
            if all(t == -100 for t in row["labels"]):
                continue
        row["unfaithful_mask"] = [0] * len(row["input_ids"])
        rows.append(row)
    if not rows:
        raise ValueError("No training rows for the hallucination adapter (no unfaithful spans?).")
    return rows


def select_negation_scale(
    model: Any,
    halluc_adapter: str,
    builder: Any,
    validation: Sequence[Any],
    base_adapter: str | None = None,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
    max_perplexity_increase: float = 0.05,
    batch_size: int = 4,
    name: str = "negated",
) -> dict[str, Any]:
    """Add `base - lam * halluc` for each `lam`, score it on `validation`, keep the best as `name`.

    Args:
        model (`Any`): a PEFT model holding `halluc_adapter` (and `base_adapter` when given).
        halluc_adapter (`str`): the adapter fine-tuned on unfaithful summaries (`tau`).
        builder (`Any`): the [`hf_contrastive.faithfulness.spans.SpanFeatureBuilder`] of the prompts.
        validation (`Sequence[Any]`): span examples with faithful references.
        base_adapter (`str | None`, *optional*): the starting point (None: the base weights `theta_0`).
        lambdas (`Sequence[float]`, *optional*, defaults to `DEFAULT_LAMBDAS`): candidates in `[0, 1]`.
        max_perplexity_increase (`float`, *optional*, defaults to `0.05`): allowed relative rise of reference perplexity over `lam = 0`.

    Returns `{"lambda": best, "adapter": name, "scores": {lam: metrics}}`; `name` is active afterwards.
    """

    lambdas = sorted({float(x) for x in lambdas})
    if not lambdas or lambdas[0] < 0 or lambdas[-1] > 1:
        raise ValueError(f"`lambdas` must be values in [0, 1], got {lambdas}.")
    if name in model.peft_config:
        raise ValueError(f"An adapter named {name!r} already exists.")
    scores: dict[float, dict[str, float]] = {}
    for lam in lambdas:
        weights = {halluc_adapter: -lam}
        if base_adapter is not None:
            weights[base_adapter] = 1.0
        tmp = f"{name}__lam{round(lam * 1000):04d}"  # module names cannot hold a dot
        if lam == 0 and base_adapter is None:
            with model.disable_adapter():
                scores[lam] = evaluate_faithfulness(model, builder, validation, batch_size)
            continue
        if lam == 0:
            weights = {base_adapter: 1.0}
        combine_adapters(model, weights, tmp)
        scores[lam] = evaluate_faithfulness(model, builder, validation, batch_size)
        model.delete_adapter(tmp)
        logger.info("lambda %.2f: %s", lam, scores[lam])
    limit = scores[lambdas[0]]["reference_perplexity"] * (1 + max_perplexity_increase)
    allowed = [lam for lam in lambdas if scores[lam]["reference_perplexity"] <= limit] or [lambdas[0]]
    best = min(allowed, key=lambda lam: scores[lam]["unfaithful_span_logprob"])
    weights = {halluc_adapter: -best}
    if base_adapter is not None:
        weights[base_adapter] = 1.0
        if best == 0:
            weights = {base_adapter: 1.0}
    if best == 0 and base_adapter is None:
        weights = {halluc_adapter: 0.0}
    combine_adapters(model, weights, name)
    return {"lambda": best, "adapter": name, "scores": scores}


def save_negated_adapter(
    model: Any,
    adapter: str,
    output_dir: str | os.PathLike,
    *,
    lam: float | None = None,
    halluc_adapter: str | None = None,
    base_adapter: str | None = None,
    tokenizer: Any = None,
    card_info: ModelCardInfo | None = None,
    training: Mapping[str, Any] | None = None,
    example_prompt: str = "Summarize the following article in one sentence.\n\n"
    "The city council met on Tuesday and voted to build a new park next to the river.\n\nSummary:",
) -> Path:
    """Save the negated adapter (`base - lam * halluc`) alone, as a loadable PEFT folder with a model card.

    Args:
        model (`Any`): the PEFT model holding `adapter` (as left by [`select_negation_scale`]).
        adapter (`str`): the adapter to save (`select_negation_scale(...)["adapter"]`); it is written at the top of
            `output_dir` so `PeftModel.from_pretrained(base, output_dir)` loads it.
        output_dir (`str | os.PathLike`): the target folder (written whole or not at all).
        lam (`float | None`, *optional*): the chosen scale, for the card.
        halluc_adapter / base_adapter: the names of `tau` and of the starting point, for the card.
        tokenizer (`Any`, *optional*): saved next to the adapter.
        card_info ([`ModelCardInfo`], *optional*): base model Hub id, datasets, license, results.
        training (`Mapping`, *optional*): how `tau` was fine-tuned (learning rate, epochs...), for the card.
        example_prompt (`str`): the prompt of the card's usage snippet.

    Returns:
        `Path`: `output_dir`.
    """

    edit = "theta_0 - lam * tau" if base_adapter is None else "theta_sft - lam * tau"
    rows = {
        "edit": f"{edit}, with tau the adapter fine-tuned on unfaithful summaries"
        + (f" (`{halluc_adapter}`)" if halluc_adapter else ""),
        "lambda": lam if lam is not None else "not recorded",
        "combination": "PEFT `add_weighted_adapter(..., combination_type='cat')` (exact for a difference of adapters)",
        **dict(training or {}),
    }
    info = card_info if card_info is not None else ModelCardInfo()
    info = replace(info, training={**rows, **info.training})
    return save_with_card(
        model,
        output_dir,
        info,
        "causal_lm_adapter.md",
        tokenizer=tokenizer,
        adapter_name=adapter,
        details={
            "title": "Task-negated summariser adapter",
            "description": (
                "A LoRA adapter for faithful summaries made with task-vector negation (Ilharco et al. 2023) as in "
                "span-level fine-tuning for faithful summarisation (2025), using "
                "[hf-contrastive](https://github.com/hf-contrastive/hf-contrastive): an adapter fine-tuned on "
                "unfaithful summaries is scaled by -lambda, so the model moves away from what it learned there."
            ),
            "method": "task-vector negation (Ilharco et al. 2023)",
            "objective": f"{edit}" + (f", lambda = {lam}" if lam is not None else ""),
            "decoding_note": "greedy decoding",
            "contrastive_search": False,
            "example_prompt": example_prompt,
            "generate_kwargs": "max_new_tokens=16, do_sample=False",
        },
        pipeline_tag="text-generation",
        tags=("faithfulness", "summarization", "task-arithmetic", "text-generation"),
        citations=(NEGATION_CITATION,),
    )
