"""Span-level fine-tuning for faithful summarisation: unlikelihood and gradient ascent on unfaithful spans.

Span-level fine-tuning for faithful abstractive summarisation (2025) trains a causal LM on summaries whose
unfaithful (hallucinated) spans are labelled. With ``m_t = 1`` on summary tokens inside an unfaithful span,
``p_t`` the model's probability of the label at position ``t``, ``N`` the number of labelled tokens and weight
``eps``:

- ``unlikelihood``:     ``L = (-sum (1-m_t) log p_t - eps * sum m_t log(1 - p_t)) / N``
  (Welleck et al. 2019; ``log(1-p)`` computed as ``log(-expm1(log p))`` with ``1-p`` clamped at ``1e-5``);
- ``gradient_ascent``:  ``L = (-sum (1-m_t) log p_t + eps * sum m_t max(log p_t, floor)) / N``
  (the ascent term is unbounded, so ``log p`` is floored; below the floor it has no gradient);
- ``nll``:              ``L = -sum (1-m_t) log p_t / N`` (plain likelihood on the faithful tokens only; with no
  spans it is ordinary supervised fine-tuning on the summaries).

``N`` is ``num_items_in_batch`` when the Trainer passes it (the labelled tokens of every micro-batch of the
optimiser step, so gradient accumulation gives the same update as one big batch), else the labelled tokens of
the batch. The per-label log-probabilities come from TRL's fused LM head, so the ``[B, T, V]`` logits are never
materialised.

The paper's headline: unlikelihood was the best of the three; the share of summaries with hallucinations fell
31% -> 13% on CNN/DM and 33% -> 20% on SAMSum.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from datasets import Dataset
from torch import nn
from trl import SFTConfig, SFTTrainer

from hf_contrastive.faithfulness.spans import (
    DEFAULT_INSTRUCTION,
    UNFAITHFUL_MASK,
    SpanDataCollator,
    SpanFeatureBuilder,
)

logger = logging.getLogger(__name__)

__all__ = [
    "OBJECTIVES",
    "SpanUnlikelihoodConfig",
    "SpanUnlikelihoodTrainer",
    "span_objective",
    "safe_log1m_exp",
    "RECIPE_SECTIONS",
    "run_span_unlikelihood_recipe",
]

OBJECTIVES = ("unlikelihood", "gradient_ascent", "nll")
RECIPE_SECTIONS = ("span", "eval")


def safe_log1m_exp(log_p: torch.Tensor, clamp: float = 1e-5) -> torch.Tensor:
    """``log(1 - p)`` from ``log p`` without cancellation: ``log(max(-expm1(log p), clamp))``.

    ``-expm1(x)`` is exact near ``x = 0`` (``p -> 1``), where ``1 - exp(x)`` would round to 0. ``clamp`` (the
    lower bound on ``1 - p``, 1e-5 as in Welleck et al. 2019) keeps the value and its gradient finite.
    """
    if clamp <= 0:
        raise ValueError(f"`clamp` must be > 0, got {clamp}.")
    return torch.log((-torch.expm1(log_p.clamp(max=0.0))).clamp(min=clamp))


def span_objective(
    log_probs: torch.Tensor,
    label_mask: torch.Tensor,
    unfaithful_mask: torch.Tensor,
    objective: str = "unlikelihood",
    eps: float = 1.0,
    num_items: torch.Tensor | int | None = None,
    log_prob_floor: float = math.log(1e-5),
    unlikelihood_clamp: float = 1e-5,
) -> dict[str, torch.Tensor]:
    """The span-level objective from per-label log-probabilities.

    Args:
        log_probs: ``[B, T]`` log-probability of each label (any value where ``label_mask`` is 0).
        label_mask: ``[B, T]`` bool, True on labelled tokens.
        unfaithful_mask: ``[B, T]`` 0/1, 1 on tokens inside an unfaithful span (ignored where not labelled).
        objective: ``"unlikelihood"``, ``"gradient_ascent"`` or ``"nll"``.
        eps: weight of the span term (>= 0).
        num_items: the normaliser ``N`` (default: the number of labelled tokens, at least 1).
        log_prob_floor: floor on ``log p`` in the gradient ascent term.
        unlikelihood_clamp: lower bound on ``1 - p`` in the unlikelihood term.

    Returns:
        dict with ``loss`` (scalar), ``faithful_nll`` and ``span_term`` (the two sums divided by ``N``, so
        ``loss = faithful_nll + eps * span_term`` for unlikelihood/gradient ascent), ``span_log_prob`` (mean
        ``log p`` over span tokens, detached; NaN without span tokens) and ``num_span_tokens``.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"Unknown objective {objective!r}; expected one of {OBJECTIVES}.")
    if eps < 0:
        raise ValueError(f"`eps` must be >= 0, got {eps}.")
    if log_probs.shape != label_mask.shape or log_probs.shape != unfaithful_mask.shape:
        raise ValueError(
            f"log_probs {tuple(log_probs.shape)}, label_mask {tuple(label_mask.shape)} and unfaithful_mask "
            f"{tuple(unfaithful_mask.shape)} must have the same shape."
        )
    log_probs = log_probs.float()
    valid = label_mask.bool()
    span = unfaithful_mask.bool() & valid
    faithful = valid & ~span
    denom = (
        valid.sum().clamp(min=1) if num_items is None else torch.as_tensor(num_items, device=log_probs.device)
    )
    denom = denom.to(log_probs.dtype).clamp(min=1)
    zero = log_probs.new_zeros(())
    faithful_nll = -torch.where(faithful, log_probs, zero).sum() / denom
    if objective == "unlikelihood":
        span_sum = -torch.where(span, safe_log1m_exp(log_probs, unlikelihood_clamp), zero).sum()
    elif objective == "gradient_ascent":
        span_sum = torch.where(span, log_probs.clamp(min=log_prob_floor), zero).sum()
    else:
        span_sum = zero * log_probs.sum()
    span_term = span_sum / denom
    loss = faithful_nll + eps * span_term if objective != "nll" else faithful_nll + span_term
    n_span = span.sum()
    span_lp = (
        torch.where(span, log_probs, zero).sum().detach() / n_span
        if n_span > 0
        else log_probs.new_tensor(float("nan"))
    )
    return {
        "loss": loss,
        "faithful_nll": faithful_nll.detach(),
        "span_term": span_term.detach(),
        "span_log_prob": span_lp,
        "num_span_tokens": n_span.detach(),
    }


@dataclass
class SpanUnlikelihoodConfig(SFTConfig):
    """Training arguments for :class:`SpanUnlikelihoodTrainer` (all ``trl.SFTConfig`` fields also apply).

    Args:
        objective: ``"unlikelihood"`` (default; the paper's best), ``"gradient_ascent"`` or ``"nll"``.
        eps: weight of the unfaithful-span term (default 1.0; must be >= 0).
        log_prob_floor: floor on ``log p`` for gradient ascent (default ``log(1e-5)``, matching the ``1e-5``
            clamp of Welleck et al. 2019).
        unlikelihood_clamp: lower bound on ``1 - p`` inside ``log(1 - p)`` (default 1e-5, Welleck et al. 2019).
        max_document_tokens: cut each document to this many tokens when building features from raw span rows
            (default None: only ``max_length`` applies, and the document is cut before the summary).
        instruction: the summarisation instruction of the prompt.
        packing / padding_free: must stay False (span masks are per row).
    """

    objective: str = field(default="unlikelihood", metadata={"help": "unlikelihood | gradient_ascent | nll"})
    eps: float = field(default=1.0, metadata={"help": "weight of the unfaithful-span term"})
    log_prob_floor: float = field(
        default=math.log(1e-5), metadata={"help": "floor on log p (gradient ascent)"}
    )
    unlikelihood_clamp: float = field(default=1e-5, metadata={"help": "lower bound on 1 - p (unlikelihood)"})
    max_document_tokens: int | None = field(
        default=None, metadata={"help": "cut documents to this many tokens"}
    )
    instruction: str = field(default=DEFAULT_INSTRUCTION, metadata={"help": "summarisation instruction"})

    def __post_init__(self) -> None:
        # Our fields first, so that a bad value is reported before any device check of TrainingArguments.
        if self.objective not in OBJECTIVES:
            raise ValueError(f"`objective` must be one of {OBJECTIVES}, got {self.objective!r}.")
        if self.eps < 0:
            raise ValueError(f"`eps` must be >= 0, got {self.eps}.")
        if self.log_prob_floor >= 0:
            raise ValueError(f"`log_prob_floor` must be < 0, got {self.log_prob_floor}.")
        if not 0 < self.unlikelihood_clamp < 1:
            raise ValueError(f"`unlikelihood_clamp` must be in (0, 1), got {self.unlikelihood_clamp}.")
        if self.packing or self.padding_free or self.eval_packing:
            raise ValueError(
                "Span masks are per row: set packing=False, eval_packing=False and padding_free=False "
                f"(got packing={self.packing}, eval_packing={self.eval_packing}, padding_free={self.padding_free})."
            )
        super().__post_init__()


class SpanUnlikelihoodTrainer(SFTTrainer):
    """``trl.SFTTrainer`` with the span-level objectives of faithful summarisation.

    Args:
        model: a causal LM (or its name); ``peft_config=`` wraps it with LoRA like ``SFTTrainer`` does.
        args: a :class:`SpanUnlikelihoodConfig`.
        train_dataset / eval_dataset: span rows (``document``, ``summary``, ``spans``, see
            :mod:`hf_contrastive.faithfulness.spans`), built into features here, or pre-built features with
            ``input_ids``, ``labels`` and ``unfaithful_mask`` (truncated together to ``max_length``).
        data_collator: defaults to :class:`~hf_contrastive.faithfulness.spans.SpanDataCollator`, which pads the mask.
        **kwargs: everything else ``SFTTrainer`` takes.

    Logged (train and ``eval_``): ``loss_faithful_nll``, ``loss_span`` and ``span_log_prob``.
    """

    def __init__(self, model: Any = None, args: SpanUnlikelihoodConfig | None = None, **kwargs: Any):
        if args is None:
            args = SpanUnlikelihoodConfig(output_dir="span-unlikelihood-output")
        if not isinstance(args, SpanUnlikelihoodConfig):
            raise TypeError(f"`args` must be a SpanUnlikelihoodConfig, got {type(args).__name__}.")
        if model is None:
            raise ValueError("SpanUnlikelihoodTrainer needs a causal language model.")
        user_collator = kwargs.get("data_collator")
        super().__init__(model=model, args=args, **kwargs)
        if user_collator is None:
            # SFTTrainer's own collator pads only ids and labels: pad the mask too.
            tok = self._tokenizer
            pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
            self.data_collator = SpanDataCollator(pad_token_id=pad)
        elif not isinstance(self.data_collator, SpanDataCollator):
            logger.warning(
                "SpanUnlikelihoodTrainer got a %s; it must pad `%s` or the span terms are zero.",
                type(self.data_collator).__name__,
                UNFAITHFUL_MASK,
            )

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            self._signature_columns = ["input_ids", "attention_mask", "labels", UNFAITHFUL_MASK]

    def _prepare_dataset(self, dataset, processing_class, args, packing, formatting_func, dataset_name):
        if packing:
            raise ValueError("Packing mixes rows and their span masks; set packing=False.")
        columns = list(getattr(dataset, "column_names", None) or [])
        if "input_ids" not in columns:
            tokenizer = getattr(processing_class, "tokenizer", processing_class)
            builder = SpanFeatureBuilder(
                tokenizer,
                max_length=args.max_length,
                max_document_tokens=args.max_document_tokens,
                instruction=args.instruction,
            )
            dataset = builder.map(dataset)
        else:
            if "labels" not in columns:
                raise ValueError(
                    f"Pre-built span features need 'labels' next to 'input_ids' (-100 on the prompt); got {columns}."
                )
            if UNFAITHFUL_MASK not in columns:
                logger.warning("%s dataset has no %r column: no span terms.", dataset_name, UNFAITHFUL_MASK)
                dataset = dataset.map(lambda r: {UNFAITHFUL_MASK: [0] * len(r["input_ids"])})
            if args.max_length is not None:
                keys = [
                    k
                    for k in ("input_ids", "attention_mask", "labels", UNFAITHFUL_MASK)
                    if k in columns or k == UNFAITHFUL_MASK
                ]
                n = args.max_length
                sl = slice(None, n) if args.truncation_mode == "keep_start" else slice(-n, None)
                dataset = dataset.map(lambda r: {k: r[k][sl] for k in keys if k in r})
        dataset = dataset.filter(lambda r: any(x != -100 for x in r["labels"]))
        if isinstance(dataset, Dataset) and len(dataset) == 0:
            raise ValueError(f"The {dataset_name} dataset has no labelled tokens left after truncation.")
        if args.shuffle_dataset:
            dataset = dataset.shuffle(seed=args.seed)
        return dataset

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        mode = "train" if self.model.training else "eval"
        inputs = dict(inputs)
        if "labels" not in inputs or "input_ids" not in inputs:
            raise ValueError(f"The batch needs 'input_ids' and 'labels', got {sorted(inputs)}.")
        unfaithful = inputs.pop(UNFAITHFUL_MASK, None)
        if unfaithful is None:
            unfaithful = torch.zeros_like(inputs["input_ids"])
        outputs = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs.get("attention_mask"),
            labels=inputs["labels"],
            fused_lm_head=True,
            use_cache=False,
        )
        # The fused head scores labels[:, 1:] from the states at [:, :-1]; the mask follows the labels.
        terms = span_objective(
            outputs.log_probs,
            outputs.label_mask,
            unfaithful[:, 1:].to(outputs.log_probs.device),
            objective=self.args.objective,
            eps=self.args.eps,
            num_items=num_items_in_batch,
            log_prob_floor=self.args.log_prob_floor,
            unlikelihood_clamp=self.args.unlikelihood_clamp,
        )
        loss = terms["loss"]
        # As in Trainer: N counts every process's tokens and DDP averages the gradients over processes.
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        metrics = self._metrics[mode]
        metrics["loss_faithful_nll"].append(float(terms["faithful_nll"]))
        metrics["loss_span"].append(float(terms["span_term"]))
        if terms["num_span_tokens"] > 0:
            metrics["span_log_prob"].append(float(terms["span_log_prob"]))
        if return_outputs:
            with torch.no_grad():
                outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"))
            return loss, outputs
        return loss


def _lora_config(section: dict[str, Any] | None):
    if not section:
        return None
    from peft import LoraConfig

    section = dict(section)
    section.setdefault("task_type", "CAUSAL_LM")
    return LoraConfig(**section)


def _recipe_setup(model_cfg: dict, data_cfg: dict, args_cfg: dict, n_validation: int):
    """What the faithfulness recipes share: the checked config, the causal LM and its tokenizer, the
    perturbed train/validation/test splits and the feature builder."""
    from hf_contrastive.faithfulness.annotation import load_summary_splits
    from hf_contrastive.faithfulness.evaluation import load_causal_lm
    from hf_contrastive.faithfulness.spans import SpanFeatureBuilder

    args_cfg.setdefault("report_to", "none")
    if not torch.cuda.is_available():
        args_cfg.setdefault("use_cpu", True)  # SFTConfig defaults to bf16, which needs a GPU
    bad = sorted(set(args_cfg) - set(SpanUnlikelihoodConfig.__dataclass_fields__))
    if bad:
        raise ValueError(f"Unknown training argument(s) {bad} (SpanUnlikelihoodConfig fields).")
    args = SpanUnlikelihoodConfig(**args_cfg)
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
    return args, model, tokenizer, splits, builder


def run_span_unlikelihood_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """Recipe task ``faithful-unlikelihood``: perturb summaries, train with the span objective, evaluate.

    Sections: ``model`` (``name_or_path``; ``smollm2`` means the packaged SmolLM2-135M-Instruct), ``data``
    (``path`` of a JSON-lines file with ``document``/``summary``, ``n_train``, ``n_validation``, ``n_test``,
    ``seed``, ``perturbations``), ``span`` (the method's fields of :class:`SpanUnlikelihoodConfig`:
    ``objective``, ``eps``, ``log_prob_floor``, ``max_length``, ``max_document_tokens``, ...), ``args``
    (``TrainingArguments`` fields), ``lora`` (``peft.LoraConfig`` fields), ``eval`` (``batch_size``). Returns the
    held-out figures before and after training (mean log-prob of unfaithful spans and of the other summary
    tokens, faithful-reference perplexity).
    """
    from hf_contrastive.faithfulness.evaluation import evaluate_faithfulness

    model_cfg = dict(recipe.get("model") or {})
    data_cfg = dict(recipe.get("data") or {})
    args_cfg = {**dict(recipe.get("args") or {}), **dict(recipe.get("span") or {})}
    eval_cfg = dict(recipe.get("eval") or {})
    if "name_or_path" not in model_cfg:
        raise ValueError("The recipe's model section needs name_or_path.")
    if "path" not in data_cfg:
        raise ValueError("The recipe's data section needs the path of a JSON-lines summary file.")
    args_cfg.setdefault("output_dir", "hf-contrastive-output/faithful-unlikelihood")
    args, model, tokenizer, splits, builder = _recipe_setup(model_cfg, data_cfg, args_cfg, n_validation=0)
    batch_size = int(eval_cfg.get("batch_size", 4))
    results: dict[str, Any] = {
        "before": evaluate_faithfulness(model, builder, splits["test"], batch_size=batch_size)
    }
    train = Dataset.from_list([ex.to_row() for ex in splits["train"]])
    trainer = SpanUnlikelihoodTrainer(
        model=model,
        args=args,
        train_dataset=train,
        processing_class=tokenizer,
        peft_config=_lora_config(recipe.get("lora")),
    )
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    results["after"] = evaluate_faithfulness(trainer.model, builder, splits["test"], batch_size=batch_size)
    if args.should_save:
        trainer.save_model(args.output_dir)
    results["output"] = str(args.output_dir)
    return results
