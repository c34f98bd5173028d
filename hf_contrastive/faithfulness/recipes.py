"""Recipe tasks of the faithfulness wing: `faithful-unlikelihood` and `faithful-task-negation`.

Both perturb reference summaries (FactCC-style: entity, number, date or negation swapped, the span known),
fine-tune a causal LM and report held-out figures before and after: the mean log-probability of the
unfaithful-span tokens, of the other summary tokens, and the perplexity of the faithful references.
Their sections::

    model:  {name_or_path: smollm2}      # a causal LM; smollm2 is the packaged SmolLM2-135M-Instruct
    data:   {path: summaries.jsonl, n_train: 200, n_validation: 0, n_test: 50, seed: 0,
             perturbations: [entity, number, date, negation], eval_batch_size: 4}
    method: SpanUnlikelihoodMethod or TaskNegationMethod fields
    args:   SpanUnlikelihoodConfig / trl.SFTConfig fields (learning rate, batch size, epochs, ...)
    lora:   peft.LoraConfig fields (task type CAUSAL_LM); required by faithful-task-negation

`data.path` is a JSON-lines file with `document` and `summary` columns.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from datasets import Dataset

from hf_contrastive.core.recipes import RecipeTask, build_args, lora_config, read_method
from hf_contrastive.faithfulness.annotation import load_summary_splits
from hf_contrastive.faithfulness.arithmetic.negation import (
    DEFAULT_LAMBDAS,
    halluc_features,
    save_negated_adapter,
    select_negation_scale,
)
from hf_contrastive.faithfulness.evaluation import evaluate_faithfulness, load_causal_lm
from hf_contrastive.faithfulness.spans import DEFAULT_INSTRUCTION, SpanExample, SpanFeatureBuilder
from hf_contrastive.faithfulness.trainer import SpanUnlikelihoodConfig, SpanUnlikelihoodTrainer

__all__ = [
    "NEGATION_TASK",
    "UNLIKELIHOOD_TASK",
    "SpanUnlikelihoodMethod",
    "TaskNegationMethod",
    "run_negation_recipe",
    "run_span_unlikelihood_recipe",
]


@dataclass
class SpanUnlikelihoodMethod:
    r"""The `method` section of `faithful-unlikelihood` recipes (span-level fine-tuning, 2025).

    Each setting is the [`SpanUnlikelihoodConfig`] field of the same name.

    Args:
        objective (`str`, *optional*, defaults to `"unlikelihood"`):
            `unlikelihood` (the paper's best: NLL on faithful tokens, `eps * -log(1 - p)` on unfaithful
            ones, Welleck et al. 2019), `gradient_ascent` (floored `log p` on unfaithful tokens) or `nll`
            (faithful tokens only).
        eps (`float`, *optional*, defaults to 1.0):
            Weight of the unfaithful-span term.
        log_prob_floor (`float`, *optional*, defaults to `log(1e-5)`):
            Floor on `log p` for gradient ascent.
        unlikelihood_clamp (`float`, *optional*, defaults to 1e-5):
            Lower bound on `1 - p` inside `log(1 - p)` (Welleck et al. 2019).
        span_weighting (`str`, *optional*, defaults to `"uniform"`):
            Detached per-token weight `w_t` of the span term, `-eps * sum m_t w_t log(1 - p_t)`: `uniform`
            (1, the paper's formula), `position` (1/k on the k-th token of a span) or `inverse_prob`
            (`min(1/p_t, span_weight_max)`, so the push on a rare token does not vanish with `p_t`).
        span_weight_max (`float`, *optional*, defaults to 1e4):
            Cap of the `inverse_prob` weight.
        mix_faithful (`bool`, *optional*, defaults to False):
            Also train on the faithful reference summary of every training document (NLL, no span), so that
            batches mix references and perturbed summaries, as in the paper's data.
        sft_steps (`int`, *optional*, defaults to 0):
            Optimiser steps of plain NLL on the faithful references before the span objective, on the same
            LoRA adapter (0: the span objective starts from the untouched model).
        max_length (`int`, *optional*, defaults to 1024):
            Token budget of prompt + summary (`trl.SFTConfig.max_length`).
        max_document_tokens (`int`, *optional*):
            Cut each document to this many tokens first (default: only `max_length` applies).
        instruction (`str`, *optional*, defaults to `DEFAULT_INSTRUCTION`):
            The summarisation instruction of the prompt.
    """

    objective: str = "unlikelihood"
    eps: float = 1.0
    log_prob_floor: float = math.log(1e-5)
    unlikelihood_clamp: float = 1e-5
    span_weighting: str = "uniform"
    span_weight_max: float = 1e4
    mix_faithful: bool = False
    sft_steps: int = 0
    max_length: int | None = 1024
    max_document_tokens: int | None = None
    instruction: str = DEFAULT_INSTRUCTION


@dataclass
class TaskNegationMethod:
    r"""The `method` section of `faithful-task-negation` recipes (Ilharco et al. 2023, as in span-level
    fine-tuning, 2025).

    A LoRA adapter is fine-tuned with plain NLL on unfaithful summaries (`tau`); the edited model is
    `theta_0 - lam * tau`, with `lam` the candidate of lowest validation log-probability of unfaithful
    spans among those whose faithful-reference perplexity rises by at most `max_perplexity_increase`.

    Args:
        lambdas (`list[float]`, *optional*, defaults to `[0.0, 0.25, 0.5, 0.75, 1.0]`):
            Candidate scales in `[0, 1]`.
        max_perplexity_increase (`float`, *optional*, defaults to 0.05):
            Allowed relative rise of the reference perplexity over `lam = 0`.
        target (`str`, *optional*, defaults to `"summary"`):
            `summary` (every token of the unfaithful summaries is a label) or `spans` (only the unfaithful
            spans' tokens, a more targeted `tau`).
        max_length (`int`, *optional*, defaults to 1024):
            Token budget of prompt + summary.
        max_document_tokens (`int`, *optional*):
            Cut each document to this many tokens first.
        instruction (`str`, *optional*, defaults to `DEFAULT_INSTRUCTION`):
            The summarisation instruction of the prompt.
    """

    lambdas: list[float] = field(default_factory=lambda: list(DEFAULT_LAMBDAS))
    max_perplexity_increase: float = 0.05
    target: str = "summary"
    max_length: int | None = 1024
    max_document_tokens: int | None = None
    instruction: str = DEFAULT_INSTRUCTION


MODEL_SCHEMA: dict[str, Any] = {"name_or_path": str}
"""The `model` keys of the faithfulness recipes: the causal LM (`smollm2`: the packaged SmolLM2-135M-Instruct)."""

DATA_SCHEMA: dict[str, Any] = {
    "path": str,
    "n_train": int,
    "n_validation": int,
    "n_test": int,
    "seed": int,
    "perturbations": list[str],
    "eval_batch_size": int,
}
"""The `data` keys of the faithfulness recipes (see the module docstring)."""


def _setup(recipe: dict[str, Any], method: Any, output_dir: str, n_validation: int, **forced: Any):
    """What both tasks share: the checked training arguments, the causal LM and its tokenizer, the
    perturbed train/validation/test splits, the feature builder and the evaluation batch size."""
    model_cfg = dict(recipe.get("model") or {})
    data_cfg = dict(recipe.get("data") or {})
    if "name_or_path" not in model_cfg:
        raise ValueError("The recipe's model section needs name_or_path.")
    if "path" not in data_cfg:
        raise ValueError("The recipe's data section needs the path of a JSON-lines summary file.")
    defaults: dict[str, Any] = {"output_dir": output_dir, "report_to": "none"}
    if not torch.cuda.is_available():
        # SFTConfig defaults to bf16, which on CPU means bf16 autocast: several times slower than float32
        defaults.update(use_cpu=True, bf16=False)
    section = {**dict(recipe.get("args") or {}), **forced}
    args = build_args(SpanUnlikelihoodConfig, section, method=method, defaults=defaults)
    model, tokenizer = load_causal_lm(model_cfg["name_or_path"])
    splits = load_summary_splits(
        data_cfg["path"],
        n_train=int(data_cfg.get("n_train", 200)),
        n_validation=int(data_cfg.get("n_validation", n_validation)),
        n_test=int(data_cfg.get("n_test", 50)),
        seed=int(data_cfg.get("seed", 0)),
        kinds=tuple(data_cfg.get("perturbations", ("entity", "number", "date", "negation"))),
    )
    builder = SpanFeatureBuilder(
        tokenizer,
        max_length=args.max_length,
        max_document_tokens=args.max_document_tokens,
        instruction=args.instruction,
    )
    return args, model, tokenizer, splits, builder, int(data_cfg.get("eval_batch_size", 4))


def run_span_unlikelihood_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """Recipe task `faithful-unlikelihood`: perturb summaries, train with the span objective, evaluate.

    Args:
        recipe (`dict`):
            The resolved recipe (see the module docstring); `method` holds [`SpanUnlikelihoodMethod`].

    Returns:
        `dict`: the held-out figures `before` and `after` training (and `sft`, after the NLL stage, when
        `method.sft_steps > 0`), and `output`.
    """
    method = read_method(SpanUnlikelihoodMethod, recipe.get("method"), task="faithful-unlikelihood")
    if method.sft_steps < 0:
        raise ValueError(f"`method.sft_steps` must be >= 0, got {method.sft_steps}.")
    args, model, tokenizer, splits, builder, batch_size = _setup(
        recipe, method, "hf-contrastive-output/faithful-unlikelihood", n_validation=0
    )
    results: dict[str, Any] = {
        "before": evaluate_faithfulness(model, builder, splits["test"], batch_size=batch_size)
    }
    faithful = [SpanExample(ex.document, ex.reference, []).to_row() for ex in splits["train"] if ex.reference]
    peft_config = lora_config(recipe.get("lora"), task_type="CAUSAL_LM")
    if method.sft_steps > 0:
        # stage 1: plain NLL on the faithful references, on the adapter the span objective then continues
        sft_args = copy.deepcopy(args)
        sft_args.objective, sft_args.max_steps = "nll", method.sft_steps
        sft_args.output_dir = f"{args.output_dir}/runs/sft-stage"  # `runs` is kept by the final save
        sft = SpanUnlikelihoodTrainer(
            model=model,
            args=sft_args,
            train_dataset=Dataset.from_list(faithful),
            processing_class=tokenizer,
            peft_config=peft_config,
        )
        sft.train()
        model, peft_config = sft.model, None
        results["sft"] = evaluate_faithfulness(model, builder, splits["test"], batch_size=batch_size)
    rows = [ex.to_row() for ex in splits["train"]] + (faithful if method.mix_faithful else [])
    trainer = SpanUnlikelihoodTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    results["after"] = evaluate_faithfulness(trainer.model, builder, splits["test"], batch_size=batch_size)
    if args.should_save:
        trainer.save_model(args.output_dir)
    results["output"] = str(args.output_dir)
    return results


def run_negation_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """Recipe task `faithful-task-negation`: fine-tune a LoRA on unfaithful summaries, negate it, pick lam.

    The span trainer runs with the `nll` objective (plain fine-tuning on the unfaithful summaries).

    Args:
        recipe (`dict`):
            The resolved recipe (see the module docstring); `method` holds [`TaskNegationMethod`], and the
            `lora` section is required.

    Returns:
        `dict`: the held-out figures of the base model (`before`) and of `theta_0 - lam * tau`
        (`after`), the chosen `lambda`, the `validation` figures of every candidate, and `output`.
    """
    method = read_method(TaskNegationMethod, recipe.get("method"), task="faithful-task-negation")
    peft_config = lora_config(recipe.get("lora"), task_type="CAUSAL_LM")
    if peft_config is None:
        raise ValueError("Task-vector negation here works on LoRA adapters: the recipe needs a lora section.")
    args, model, tokenizer, splits, builder, batch_size = _setup(
        recipe, method, "hf-contrastive-output/faithful-task-negation", n_validation=24, objective="nll"
    )
    if not splits["validation"]:
        raise ValueError("Choosing lambda needs a validation split: set data.n_validation > 0.")
    results: dict[str, Any] = {
        "before": evaluate_faithfulness(model, builder, splits["test"], batch_size=batch_size)
    }
    train = Dataset.from_list(halluc_features(builder, splits["train"], method.target))
    trainer = SpanUnlikelihoodTrainer(
        model=model, args=args, train_dataset=train, processing_class=tokenizer, peft_config=peft_config
    )
    trainer.train()
    peft_model = trainer.model
    choice = select_negation_scale(
        peft_model,
        "default",
        builder,
        splits["validation"],
        lambdas=method.lambdas,
        max_perplexity_increase=float(method.max_perplexity_increase),
        batch_size=batch_size,
    )
    results["lambda"] = choice["lambda"]
    results["validation"] = {str(k): v for k, v in choice["scores"].items()}
    results["after"] = evaluate_faithfulness(peft_model, builder, splits["test"], batch_size=batch_size)
    if args.should_save:
        save_negated_adapter(
            peft_model,
            choice["adapter"],
            args.output_dir,
            lam=choice["lambda"],
            halluc_adapter="default",
            tokenizer=tokenizer,
            training={
                "tau": f"LoRA fine-tuned on unfaithful summaries (`nll` objective), learning rate "
                f"{args.learning_rate}, {args.num_train_epochs} epochs",
            },
        )
    results["output"] = str(args.output_dir)
    return results


UNLIKELIHOOD_TASK = RecipeTask(
    name="faithful-unlikelihood",
    runner=run_span_unlikelihood_recipe,
    method=SpanUnlikelihoodMethod,
    legacy_sections=("span", "eval"),
    description="span-level unlikelihood on perturbed summaries, faithfulness figures before/after",
    model_schema=MODEL_SCHEMA,
    data_schema=DATA_SCHEMA,
    args_classes=(SpanUnlikelihoodConfig,),
)

NEGATION_TASK = RecipeTask(
    name="faithful-task-negation",
    runner=run_negation_recipe,
    method=TaskNegationMethod,
    legacy_sections=("span", "negation", "eval"),
    description="LoRA task-vector negation against unfaithful summaries, lambda chosen on validation",
    model_schema=MODEL_SCHEMA,
    data_schema=DATA_SCHEMA,
    args_classes=(SpanUnlikelihoodConfig,),
)
