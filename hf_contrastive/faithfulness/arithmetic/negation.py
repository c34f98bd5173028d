"""Task-vector negation for faithful summarisation (Ilharco et al. 2023, applied as in span-level fine-tuning).

Fine-tune on unfaithful summaries to get ``theta_h``; ``tau = theta_h - theta_0``; the edited model is
``theta* = theta_0 - lam * tau`` with ``lam`` in ``[0, 1]`` chosen on held-out data. With LoRA both sides are
adapters and the edit is an exact adapter (``cat`` combination, see :mod:`hf_contrastive.faithfulness.arithmetic.lora`):
``-lam * halluc`` on the base, or ``sft - lam * halluc`` when a faithful SFT adapter is the starting point.

``lam`` is the one with the lowest validation log-probability of unfaithful spans among those whose
faithful-reference perplexity stays within ``max_perplexity_increase`` of ``lam = 0``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from hf_contrastive.faithfulness.arithmetic.lora import combine_adapters

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_LAMBDAS",
    "halluc_features",
    "select_negation_scale",
    "RECIPE_SECTIONS",
    "run_negation_recipe",
]

DEFAULT_LAMBDAS = (0.0, 0.25, 0.5, 0.75, 1.0)
RECIPE_SECTIONS = ("span", "negation", "eval")


def halluc_features(
    builder: Any, examples: Sequence[Any], target: str = "summary"
) -> list[dict[str, list[int]]]:
    """Features to fine-tune ``theta_h`` on unfaithful content, with plain NLL (no span term).

    ``target="summary"``: every token of the unfaithful summaries is a label; ``"spans"``: only the tokens of
    the unfaithful spans are (a more targeted ``tau``). The ``unfaithful_mask`` is cleared so the ``nll``
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
    """Add ``base - lam * halluc`` for each ``lam``, score it on ``validation``, keep the best as ``name``.

    Args:
        model: a PEFT model holding ``halluc_adapter`` (and ``base_adapter`` when given).
        halluc_adapter: the adapter fine-tuned on unfaithful summaries (``tau``).
        builder: the :class:`~hf_contrastive.faithfulness.spans.SpanFeatureBuilder` of the prompts.
        validation: span examples with faithful references.
        base_adapter: the starting point (None: the base weights ``theta_0``).
        lambdas: candidates in ``[0, 1]``.
        max_perplexity_increase: allowed relative rise of reference perplexity over ``lam = 0``.

    Returns ``{"lambda": best, "adapter": name, "scores": {lam: metrics}}``; ``name`` is active afterwards.
    """
    from hf_contrastive.faithfulness.evaluation import evaluate_faithfulness

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


def run_negation_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """Recipe task ``faithful-task-negation``: fine-tune a LoRA on unfaithful summaries, negate it, pick lam.

    Sections: ``model``, ``data``, ``span``, ``args``, ``lora`` as in ``faithful-unlikelihood`` (the
    objective is forced to ``nll``: plain fine-tuning on the unfaithful summaries); ``negation``
    (``lambdas``, ``max_perplexity_increase``, ``target``: ``summary`` or ``spans``); ``eval`` (``batch_size``).
    Returns the held-out figures of the base model and of ``theta_0 - lam * tau``, and the chosen ``lambda``.
    """
    from datasets import Dataset

    from hf_contrastive.faithfulness.evaluation import evaluate_faithfulness
    from hf_contrastive.faithfulness.trainer import (
        SpanUnlikelihoodTrainer,
        _lora_config,
        _recipe_setup,
    )

    model_cfg = dict(recipe.get("model") or {})
    data_cfg = dict(recipe.get("data") or {})
    args_cfg = {**dict(recipe.get("args") or {}), **dict(recipe.get("span") or {})}
    neg_cfg = dict(recipe.get("negation") or {})
    eval_cfg = dict(recipe.get("eval") or {})
    if "name_or_path" not in model_cfg or "path" not in data_cfg:
        raise ValueError("The recipe needs model.name_or_path and data.path.")
    if not recipe.get("lora"):
        raise ValueError("Task-vector negation here works on LoRA adapters: the recipe needs a lora section.")
    args_cfg.setdefault("output_dir", "hf-contrastive-output/faithful-task-negation")
    args_cfg["objective"] = "nll"
    args, model, tokenizer, splits, builder = _recipe_setup(model_cfg, data_cfg, args_cfg, n_validation=24)
    if not splits["validation"]:
        raise ValueError("Choosing lambda needs a validation split: set data.n_validation > 0.")
    batch_size = int(eval_cfg.get("batch_size", 4))
    results: dict[str, Any] = {
        "before": evaluate_faithfulness(model, builder, splits["test"], batch_size=batch_size)
    }
    train = Dataset.from_list(
        halluc_features(builder, splits["train"], str(neg_cfg.get("target", "summary")))
    )
    trainer = SpanUnlikelihoodTrainer(
        model=model,
        args=args,
        train_dataset=train,
        processing_class=tokenizer,
        peft_config=_lora_config(recipe["lora"]),
    )
    trainer.train()
    peft_model = trainer.model
    choice = select_negation_scale(
        peft_model,
        "default",
        builder,
        splits["validation"],
        lambdas=neg_cfg.get("lambdas", DEFAULT_LAMBDAS),
        max_perplexity_increase=float(neg_cfg.get("max_perplexity_increase", 0.05)),
        batch_size=batch_size,
    )
    results["lambda"] = choice["lambda"]
    results["validation"] = {str(k): v for k, v in choice["scores"].items()}
    results["after"] = evaluate_faithfulness(peft_model, builder, splits["test"], batch_size=batch_size)
    if args.should_save:
        peft_model.save_pretrained(args.output_dir, selected_adapters=[choice["adapter"]])
    results["output"] = str(args.output_dir)
    return results
