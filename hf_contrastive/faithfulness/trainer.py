"""Span-level fine-tuning for faithful summarisation: unlikelihood and gradient ascent on unfaithful spans.

Span-level fine-tuning for faithful abstractive summarisation (2025) trains a causal LM on summaries whose
unfaithful (hallucinated) spans are labelled. With `m_t = 1` on summary tokens inside an unfaithful span,
`p_t` the model's probability of the label at position `t`, `N` the number of labelled tokens and weight
`eps`:

- `unlikelihood`:     `L = (-sum (1-m_t) log p_t - eps * sum m_t log(1 - p_t)) / N`
  (Welleck et al. 2019; `log(1-p)` computed as `log(-expm1(log p))` with `1-p` clamped at `1e-5`);
- `gradient_ascent`:  `L = (-sum (1-m_t) log p_t + eps * sum m_t max(log p_t, floor)) / N`
  (the ascent term is unbounded, so `log p` is floored; below the floor it has no gradient);
- `nll`:              `L = -sum (1-m_t) log p_t / N` (plain likelihood on the faithful tokens only; with no
  spans it is ordinary supervised fine-tuning on the summaries).

`N` is `num_items_in_batch` when the Trainer passes it (the labelled tokens of every micro-batch of the
optimiser step, so gradient accumulation gives the same update as one big batch), else the labelled tokens of
the batch. The per-label log-probabilities come from TRL's fused LM head, so the `[B, T, V]` logits are never
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

from hf_contrastive.core.checkpoint import AtomicCheckpointMixin
from hf_contrastive.core.data.checks import require_rows
from hf_contrastive.core.engines import EngineMixin
from hf_contrastive.core.hub.mixin import CardTrainerMixin
from hf_contrastive.faithfulness.losses import (
    OBJECTIVES,
    SPAN_WEIGHTINGS,
    SpanUnlikelihoodLoss,
    safe_log1m_exp,
    span_objective,
)
from hf_contrastive.faithfulness.spans import (
    DEFAULT_INSTRUCTION,
    UNFAITHFUL_MASK,
    SpanDataCollator,
    SpanFeatureBuilder,
    build_summary_prompt,
)

logger = logging.getLogger(__name__)

__all__ = [
    "OBJECTIVES",
    "SpanUnlikelihoodConfig",
    "SpanUnlikelihoodTrainer",
    "span_objective",
    "safe_log1m_exp",
]


@dataclass
class SpanUnlikelihoodConfig(SFTConfig):
    """Training arguments for [`SpanUnlikelihoodTrainer`] (all `trl.SFTConfig` fields also apply).

    Args:
        objective (`str`, *optional*, defaults to `"unlikelihood"`): `"unlikelihood"` (default; the paper's best), `"gradient_ascent"` or `"nll"`.
        eps (`float`, *optional*, defaults to `1.0`): weight of the unfaithful-span term (default 1.0; must be >= 0).
        log_prob_floor (`float`, *optional*, defaults to `math.log(1e-05)`): floor on `log p` for gradient ascent (default `log(1e-5)`, matching the `1e-5`
            clamp of Welleck et al. 2019).
        unlikelihood_clamp (`float`, *optional*, defaults to `1e-05`): lower bound on `1 - p` inside `log(1 - p)` (default 1e-5, Welleck et al. 2019).
        span_weighting (`str`, *optional*, defaults to `"uniform"`): detached per-token weight `w_t` of the span term,
            `-eps * sum m_t w_t log(1 - p_t)`: `"uniform"` (1, the paper's formula), `"position"` (1/k on the k-th
            token of a span) or `"inverse_prob"` (`min(1/p_t, span_weight_max)`); see
            [`hf_contrastive.faithfulness.losses.span_weights`].
        span_weight_max (`float`, *optional*, defaults to `1e4`): cap of the `"inverse_prob"` weight (>= 1).
        max_document_tokens (`int | None`, *optional*): cut each document to this many tokens when building features from raw span rows
            (default None: only `max_length` applies, and the document is cut before the summary).
        instruction (`str`, *optional*, defaults to `DEFAULT_INSTRUCTION`): the summarisation instruction of the prompt.
        packing / padding_free: must stay False (span masks are per row).
    """

    objective: str = field(default="unlikelihood", metadata={"help": "unlikelihood | gradient_ascent | nll"})
    eps: float = field(default=1.0, metadata={"help": "weight of the unfaithful-span term"})
    log_prob_floor: float = field(
        default=math.log(1e-5), metadata={"help": "floor on log p (gradient ascent)"}
    )
    unlikelihood_clamp: float = field(default=1e-5, metadata={"help": "lower bound on 1 - p (unlikelihood)"})
    span_weighting: str = field(
        default="uniform",
        metadata={"help": "per-token weight of the span term: uniform | position | inverse_prob"},
    )
    span_weight_max: float = field(default=1e4, metadata={"help": "cap of the inverse_prob weight"})
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
        if self.span_weighting not in SPAN_WEIGHTINGS:
            raise ValueError(
                f"`span_weighting` must be one of {SPAN_WEIGHTINGS}, got {self.span_weighting!r}."
            )
        if self.span_weight_max < 1:
            raise ValueError(f"`span_weight_max` must be >= 1, got {self.span_weight_max}.")
        if self.packing or self.padding_free or self.eval_packing:
            raise ValueError(
                "Span masks are per row: set packing=False, eval_packing=False and padding_free=False "
                f"(got packing={self.packing}, eval_packing={self.eval_packing}, padding_free={self.padding_free})."
            )
        super().__post_init__()


class SpanUnlikelihoodTrainer(AtomicCheckpointMixin, EngineMixin, CardTrainerMixin, SFTTrainer):
    """`trl.SFTTrainer` with the span-level objectives of faithful summarisation.

    Args:
        model (`Any`, *optional*): a causal LM (or its name); `peft_config=` wraps it with LoRA like `SFTTrainer` does.
        args (`SpanUnlikelihoodConfig | None`, *optional*): a [`SpanUnlikelihoodConfig`].
        train_dataset / eval_dataset: span rows (`document`, `summary`, `spans`, see
            `hf_contrastive.faithfulness.spans`), built into features here, or pre-built features with
            `input_ids`, `labels` and `unfaithful_mask` (truncated together to `max_length`).
        data_collator (`Callable`, *optional*): defaults to [`hf_contrastive.faithfulness.spans.SpanDataCollator`], which pads the mask.
        **kwargs (`Any`): everything else `SFTTrainer` takes.

    The objective is `self.loss_fn`, a [`hf_contrastive.faithfulness.losses.SpanUnlikelihoodLoss`] built
    from `args`. Logged (train and `eval_`): `loss_faithful_nll`, `loss_span` and `span_log_prob`.

    `save_model` / `push_to_hub` write the model (or its LoRA adapter) with a card
    (`model_cards/causal_lm_adapter.md`) naming the objective; `trainer.card_info` takes the base
    model's Hub id, datasets, license and results.
    """

    card_tags = ("faithfulness", "summarization", "text-generation")
    _CARD_OBJECTIVES = {
        "unlikelihood": "span unlikelihood: -sum (1-m_t) log p_t - eps * sum m_t log(1 - p_t), "
        "m_t = 1 on unfaithful summary tokens (Welleck et al. 2019, applied to labelled spans)",
        "gradient_ascent": "gradient ascent on unfaithful spans: -sum (1-m_t) log p_t + eps * sum m_t "
        "max(log p_t, floor)",
        "nll": "likelihood on the faithful summary tokens only: -sum (1-m_t) log p_t",
    }

    def __init__(self, model: Any = None, args: SpanUnlikelihoodConfig | None = None, **kwargs: Any):
        if args is None:
            args = SpanUnlikelihoodConfig(output_dir="span-unlikelihood-output")
        if not isinstance(args, SpanUnlikelihoodConfig):
            raise TypeError(f"`args` must be a SpanUnlikelihoodConfig, got {type(args).__name__}.")
        if model is None:
            raise ValueError("SpanUnlikelihoodTrainer needs a causal language model.")
        require_rows(kwargs.get("train_dataset"), name="train_dataset", owner=type(self).__name__)
        require_rows(kwargs.get("eval_dataset"), name="eval_dataset", owner=type(self).__name__)
        user_collator = kwargs.get("data_collator")
        self.loss_fn = SpanUnlikelihoodLoss(
            objective=args.objective,
            eps=args.eps,
            log_prob_floor=args.log_prob_floor,
            unlikelihood_clamp=args.unlikelihood_clamp,
            span_weighting=args.span_weighting,
            span_weight_max=args.span_weight_max,
        )
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

    def card_training(self) -> dict[str, Any]:
        args = self.args
        training = {"loss": self._CARD_OBJECTIVES[args.objective] + ", divided by the labelled tokens"}
        if args.objective != "nll":
            training["eps (weight of the span term)"] = args.eps
        if args.objective == "unlikelihood":
            training["clamp on 1 - p"] = args.unlikelihood_clamp
        if args.objective != "nll" and args.span_weighting != "uniform":
            training["span token weight"] = args.span_weighting
        if args.objective == "gradient_ascent":
            training["floor on log p"] = args.log_prob_floor
        training["max length"] = args.max_length
        return training

    def card_details(self) -> dict[str, Any]:
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        document = "The city council met on Tuesday and voted to build a new park next to the river."
        prompt, _ = build_summary_prompt(tokenizer, document, self.args.instruction, None)
        return {
            "title": "Faithful summariser",
            "description": (
                "A causal language model fine-tuned for faithful summaries with span-level objectives "
                "(span-level fine-tuning for faithful summarisation, 2025) using "
                "[hf-contrastive](https://github.com/hf-contrastive/hf-contrastive): tokens of summaries labelled "
                f"as unfaithful are trained with the `{self.args.objective}` objective, the others with likelihood."
            ),
            "method": "span-level fine-tuning for faithful summarisation (2025)",
            "objective": f"`{self.args.objective}`: {self._CARD_OBJECTIVES[self.args.objective]}",
            "decoding_note": "greedy decoding",
            "contrastive_search": False,
            "example_prompt": prompt,
            "generate_kwargs": "max_new_tokens=16, do_sample=False",
        }

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
        out = self.loss_fn(
            outputs.log_probs,
            outputs.label_mask,
            unfaithful[:, 1:].to(outputs.log_probs.device),
            num_items=num_items_in_batch,
        )
        loss, terms = out.loss, out.components
        # As in Trainer: N counts every process's tokens and DDP averages the gradients over processes.
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        metrics = self._metrics[mode]
        metrics["loss_faithful_nll"].append(float(terms["faithful_nll"]))
        metrics["loss_span"].append(float(terms["span_term"]))
        if "span_log_prob" in terms:
            metrics["span_log_prob"].append(float(terms["span_log_prob"]))
        if return_outputs:
            with torch.no_grad():
                outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"))
            return loss, outputs
        return loss
