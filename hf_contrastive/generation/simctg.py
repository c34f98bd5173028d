"""SimCTG training objective (Su et al. 2022, "A Contrastive Framework for Neural Text Generation").

The language-modelling loss is complemented by a token-level contrastive margin loss on the last-layer states
`h` of each sequence `x`:

    L_CL = 1 / (|x| (|x| - 1)) * sum_i sum_{j != i} max(0, rho - s(h_i, h_i) + s(h_i, h_j)),   s = cosine,

with margin `rho = 0.5`. It spreads token representations apart (isotropy), which is what contrastive search
relies on at decoding time. Total loss: `L_MLE + contrastive_weight * L_CL`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainingArguments

from hf_contrastive.core.checkpoint import AtomicCheckpointMixin
from hf_contrastive.core.data.checks import require_rows
from hf_contrastive.core.engines import EngineMixin
from hf_contrastive.core.hub.mixin import CardTrainerMixin
from hf_contrastive.core.peft import apply_peft
from hf_contrastive.generation.losses import SimCTGLoss, simctg_contrastive_loss

__all__ = ["SimCTGConfig", "SimCTGTrainer", "SimCTGCollator", "SimCTGLoss", "simctg_contrastive_loss"]


@dataclass
class SimCTGConfig(TrainingArguments):
    """Training arguments for [`SimCTGTrainer`].

    Args:
        margin (`float`, *optional*, defaults to `0.5`): rho of the contrastive margin loss (default 0.5, Su et al. 2022).
        contrastive_weight (`float`, *optional*, defaults to `1.0`): weight of the contrastive term added to the LM loss (default 1.0, as in the paper).
        remove_unused_columns (`bool`, *optional*, defaults to `False`): kept False so `attention_mask` and `labels` reach `compute_loss`.
    """

    margin: float = field(default=0.5, metadata={"help": "rho of the SimCTG margin loss"})
    contrastive_weight: float = field(default=1.0, metadata={"help": "weight of the contrastive term"})
    remove_unused_columns: bool = field(default=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.margin < 0:
            raise ValueError(f"`margin` must be >= 0, got {self.margin}.")
        if self.contrastive_weight < 0:
            raise ValueError(f"`contrastive_weight` must be >= 0, got {self.contrastive_weight}.")


class SimCTGCollator:
    """Pad `input_ids` (lists or tensors) into a batch with `attention_mask` and `labels` (-100 on padding)."""

    def __init__(self, pad_token_id: int, max_length: int | None = None) -> None:
        self.pad_token_id = int(pad_token_id)
        self.max_length = max_length

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not features or "input_ids" not in features[0]:
            raise ValueError("SimCTGCollator expects features with an 'input_ids' field.")
        seqs = [torch.as_tensor(f["input_ids"], dtype=torch.long)[: self.max_length] for f in features]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = s
            mask[i, : len(s)] = 1
        labels = ids.masked_fill(mask == 0, -100)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class SimCTGTrainer(AtomicCheckpointMixin, EngineMixin, CardTrainerMixin, Trainer):
    """`transformers.Trainer` with the SimCTG objective: LM loss + weighted token-level contrastive loss.

    Args:
        model (`Any`, *optional*): a causal LM (`AutoModelForCausalLM`).
        args (`SimCTGConfig | None`, *optional*): a [`SimCTGConfig`] (`margin`, `contrastive_weight`).
        peft_config (`Any`, *optional*): optional `peft` config (e.g. `LoraConfig`); the model is wrapped with `apply_peft`.
        **kwargs (`Any`): everything else `Trainer` takes (`train_dataset`, `data_collator`, `processing_class`...).

    The objective is `self.loss_fn`, a [`hf_contrastive.generation.losses.SimCTGLoss`] built from `args`.
    Logged components: `loss_mle` and `loss_contrastive` (training and `eval_` metrics).

    `save_model` / `push_to_hub` write the model (or its LoRA adapter) with a card
    (`model_cards/causal_lm_adapter.md`); `trainer.card_info` takes the base model's Hub id, datasets,
    license and results.
    """

    card_tags = ("simctg", "contrastive-search", "text-generation")

    def __init__(
        self, model: Any = None, args: SimCTGConfig | None = None, peft_config: Any = None, **kwargs: Any
    ):
        if args is None:
            args = SimCTGConfig(output_dir="simctg-output")
        if not isinstance(args, SimCTGConfig):
            raise TypeError(f"`args` must be a SimCTGConfig, got {type(args).__name__}.")
        if model is None:
            raise ValueError("SimCTGTrainer needs a causal language model.")
        require_rows(kwargs.get("train_dataset"), name="train_dataset", owner=type(self).__name__)
        require_rows(kwargs.get("eval_dataset"), name="eval_dataset", owner=type(self).__name__)
        if peft_config is not None:
            model = apply_peft(model, peft_config)
        super().__init__(model=model, args=args, **kwargs)
        self.loss_fn = SimCTGLoss(margin=args.margin, contrastive_weight=args.contrastive_weight)
        self._components: dict[str, list[float]] = {"loss_mle": [], "loss_contrastive": []}

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ):
        if "input_ids" not in inputs:
            raise ValueError(f"SimCTGTrainer needs 'input_ids' in the batch, got {sorted(inputs)}.")
        labels = inputs.get("labels")
        if labels is None:
            labels = inputs["input_ids"].masked_fill(inputs.get("attention_mask", 1) == 0, -100)
        outputs = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs.get("attention_mask"),
            labels=labels,
            output_hidden_states=True,
            return_dict=True,
        )
        out = self.loss_fn(outputs.hidden_states[-1], inputs.get("attention_mask"), lm_loss=outputs.loss)
        for name, value in out.components.items():
            self._components[f"loss_{name}"].append(float(value))
        return (out.loss, outputs) if return_outputs else out.loss

    def card_training(self) -> dict[str, Any]:
        cfg = self.loss_fn.config_dict()
        return {
            "loss": "L_MLE + contrastive_weight * L_CL, the token-level contrastive margin loss of SimCTG "
            "(Su et al. 2022): mean over token pairs i != j of max(0, rho - s(h_i, h_i) + s(h_i, h_j)), "
            "s = cosine of last-layer states",
            "margin (rho)": cfg.get("margin"),
            "contrastive weight": cfg.get("contrastive_weight"),
        }

    def card_details(self) -> dict[str, Any]:
        return {
            "title": "SimCTG language model",
            "description": (
                "A causal language model fine-tuned with the SimCTG objective (Su et al. 2022) using "
                "[hf-contrastive](https://github.com/hf-contrastive/hf-contrastive): the language-modelling loss "
                "plus a token-level contrastive loss that spreads its token representations apart, which is what "
                "contrastive search relies on at decoding time."
            ),
            "method": "SimCTG (Su et al. 2022)",
            "objective": "L_MLE + contrastive_weight * L_CL (token-level contrastive margin loss)",
            "decoding_note": "contrastive search, `penalty_alpha=0.6, top_k=4`",
            "contrastive_search": True,
            "example_prompt": "The city council met on Tuesday and",
            "generate_kwargs": "max_new_tokens=16, penalty_alpha=0.6, top_k=4",
        }

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        prefix = "eval_" if any(k.startswith("eval_") for k in logs) else ""
        for key, values in self._components.items():
            if values:
                logs[f"{prefix}{key}"] = sum(values) / len(values)
                values.clear()
        super().log(logs, *args, **kwargs)
