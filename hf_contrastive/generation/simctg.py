"""SimCTG training objective (Su et al. 2022, "A Contrastive Framework for Neural Text Generation").

The language-modelling loss is complemented by a token-level contrastive margin loss on the last-layer states
``h`` of each sequence ``x``:

    L_CL = 1 / (|x| (|x| - 1)) * sum_i sum_{j != i} max(0, rho - s(h_i, h_i) + s(h_i, h_j)),   s = cosine,

with margin ``rho = 0.5``. It spreads token representations apart (isotropy), which is what contrastive search
relies on at decoding time. Total loss: ``L_MLE + contrastive_weight * L_CL``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainingArguments

__all__ = ["SimCTGConfig", "SimCTGTrainer", "SimCTGCollator", "simctg_contrastive_loss"]


def simctg_contrastive_loss(
    hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, margin: float = 0.5
) -> torch.Tensor:
    """Token-level contrastive margin loss of SimCTG.

    Args:
        hidden_states: [B, T, D] last-layer token states.
        attention_mask: [B, T] with 1 for real tokens (pairs with a padding token are ignored); None = no padding.
        margin: rho (default 0.5, the paper's value).

    Returns:
        A scalar: the mean of ``max(0, rho - s(h_i, h_i) + s(h_i, h_j))`` over all valid pairs i != j of every
        sequence (computed in float32).
    """
    if hidden_states.ndim != 3:
        raise ValueError(
            f"`hidden_states` must be [batch, seq, dim], got shape {tuple(hidden_states.shape)}."
        )
    if margin < 0:
        raise ValueError(f"`margin` (rho) must be >= 0, got {margin}.")
    h = nn.functional.normalize(hidden_states.float(), dim=-1)
    sim = h @ h.transpose(1, 2)  # [B, T, T]
    gold = sim.diagonal(dim1=1, dim2=2)[:, :, None]
    loss = torch.relu(margin - gold + sim)
    b, t, _ = h.shape
    mask = (
        torch.ones(b, t, dtype=torch.bool, device=h.device)
        if attention_mask is None
        else attention_mask.bool()
    )
    pair = mask[:, :, None] & mask[:, None, :]
    pair &= ~torch.eye(t, dtype=torch.bool, device=h.device)[None]
    count = pair.sum()
    if count == 0:
        return loss.sum() * 0.0
    return (loss * pair).sum() / count


@dataclass
class SimCTGConfig(TrainingArguments):
    """Training arguments for :class:`SimCTGTrainer`.

    Args:
        margin: rho of the contrastive margin loss (default 0.5, Su et al. 2022).
        contrastive_weight: weight of the contrastive term added to the LM loss (default 1.0, as in the paper).
        remove_unused_columns: kept False so ``attention_mask`` and ``labels`` reach ``compute_loss``.
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
    """Pad ``input_ids`` (lists or tensors) into a batch with ``attention_mask`` and ``labels`` (-100 on padding)."""

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


class SimCTGTrainer(Trainer):
    """``transformers.Trainer`` with the SimCTG objective: LM loss + weighted token-level contrastive loss.

    Args:
        model: a causal LM (``AutoModelForCausalLM``).
        args: a :class:`SimCTGConfig` (``margin``, ``contrastive_weight``).
        peft_config: optional ``peft`` config (e.g. ``LoraConfig``); the model is wrapped with ``get_peft_model``.
        **kwargs: everything else ``Trainer`` takes (``train_dataset``, ``data_collator``, ``processing_class``...).

    Logged components: ``loss_mle`` and ``loss_contrastive`` (training and ``eval_`` metrics).
    """

    def __init__(
        self, model: Any = None, args: SimCTGConfig | None = None, peft_config: Any = None, **kwargs: Any
    ):
        if args is None:
            args = SimCTGConfig(output_dir="simctg-output")
        if not isinstance(args, SimCTGConfig):
            raise TypeError(f"`args` must be a SimCTGConfig, got {type(args).__name__}.")
        if model is None:
            raise ValueError("SimCTGTrainer needs a causal language model.")
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        super().__init__(model=model, args=args, **kwargs)
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
        mle = outputs.loss
        cl = simctg_contrastive_loss(
            outputs.hidden_states[-1], inputs.get("attention_mask"), self.args.margin
        )
        loss = mle + self.args.contrastive_weight * cl.to(mle.dtype)
        self._components["loss_mle"].append(float(mle.detach()))
        self._components["loss_contrastive"].append(float(cl.detach()))
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        prefix = "eval_" if any(k.startswith("eval_") for k in logs) else ""
        for key, values in self._components.items():
            if values:
                logs[f"{prefix}{key}"] = sum(values) / len(values)
                values.clear()
        super().log(logs, *args, **kwargs)
