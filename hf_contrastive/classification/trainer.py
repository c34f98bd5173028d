"""Fine-tuning a sequence(-pair) classifier with Vega v1's tricks, each switched by a config field:
[`ClassificationTrainer`] and [`ClassificationTricksConfig`].

- `adversarial="freelb"`: FreeLB. Each step runs `adv_steps` ascents of a perturbation of the input embeddings
  (started at `adv_init_mag`, step `adv_step_size`, Frobenius ball `adv_max_norm`, 0 = unbounded) and back-propagates
  the loss at every one, divided by their number: the parameters get the average gradient over the trajectory.
- `adversarial="smart"`: SMART's smoothness-inducing regulariser. Gaussian noise of standard deviation
  `adv_init_mag` on the embeddings, one normalised ascent step of `adv_step_size` on the symmetric KL between the
  clean and perturbed predictions (projected on the `adv_max_norm` ball), and `smart_weight` times that symmetric KL
  added to the loss.
- `self_distillation_weight > 0`: the predictions of an exponential moving average of the model (momentum
  `self_distillation_momentum`) as a second target, `KL(p_ema || p)`: SMART's momentum Bregman proximal point, and
  this library's reading of Vega v1's "self-calibrated" fine-tuning (the paper gives no formula).
- Transductive fine-tuning (Vega v1) is a data choice: continue [`RTDForPreTraining`] on the task's unlabelled
  inputs (train, dev and test sentences) before fine-tuning; see `examples/vega_mrpc.py`.

The model is any `AutoModelForSequenceClassification` (it must take `inputs_embeds`). Evaluation reports accuracy
and, for two classes, F1 of class 1 (GLUE's MRPC metrics).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback, TrainingArguments

from hf_contrastive.classification.adversarial import (
    initial_perturbation,
    normalized_ascent,
    project_perturbation,
    symmetric_kl,
)
from hf_contrastive.core.checkpoint import AtomicCheckpointMixin
from hf_contrastive.core.engines import EngineMixin
from hf_contrastive.core.losses.base import upcast
from hf_contrastive.core.momentum import MomentumEncoder

__all__ = ["ADVERSARIAL", "ClassificationTrainer", "ClassificationTricksConfig", "classification_metrics"]

ADVERSARIAL = ("none", "freelb", "smart")


@dataclass
class ClassificationTricksConfig(TrainingArguments):
    r"""Arguments of [`ClassificationTrainer`]: `TrainingArguments` plus the tricks (all off by default).

    Args:
        adversarial (`str`, `"none"`): `none`, `freelb` or `smart`.
        adv_steps (`int`, 3): FreeLB's ascent steps per optimiser step (SMART always takes one).
        adv_step_size (`float`, 0.1): the ascent step :math:`\alpha` (FreeLB: 0.1; SMART: 1e-3).
        adv_init_mag (`float`, 0.1): FreeLB's initial magnitude :math:`\epsilon_0`; SMART's noise standard deviation.
        adv_max_norm (`float`, 0.0): radius of the perturbation ball (0: unbounded).
        smart_weight (`float`, 1.0): :math:`\lambda_s` of SMART's regulariser.
        self_distillation_weight (`float`, 0.0): weight of `KL(p_ema || p)`.
        self_distillation_momentum (`float`, 0.99): momentum of the EMA teacher.
    """

    adversarial: str = field(default="none", metadata={"help": "none | freelb | smart."})
    adv_steps: int = field(default=3, metadata={"help": "FreeLB ascent steps."})
    adv_step_size: float = field(default=0.1, metadata={"help": "Ascent step size."})
    adv_init_mag: float = field(
        default=0.1, metadata={"help": "Initial perturbation magnitude / SMART noise std."}
    )
    adv_max_norm: float = field(default=0.0, metadata={"help": "Perturbation radius (0: unbounded)."})
    smart_weight: float = field(default=1.0, metadata={"help": "SMART regulariser weight."})
    self_distillation_weight: float = field(default=0.0, metadata={"help": "EMA self-distillation weight."})
    self_distillation_momentum: float = field(default=0.99, metadata={"help": "EMA teacher momentum."})
    report_to: Any = field(default="none", metadata={"help": "Loggers."})
    save_strategy: Any = field(default="no", metadata={"help": "Checkpoints."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.adversarial not in ADVERSARIAL:
            raise ValueError(f"adversarial must be one of {ADVERSARIAL}, got {self.adversarial!r}.")
        if self.adv_steps < 1:
            raise ValueError(f"adv_steps must be >= 1, got {self.adv_steps}.")
        for name in (
            "adv_step_size",
            "adv_init_mag",
            "adv_max_norm",
            "smart_weight",
            "self_distillation_weight",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if not 0.0 <= self.self_distillation_momentum < 1.0:
            raise ValueError(
                f"self_distillation_momentum must be in [0, 1), got {self.self_distillation_momentum}."
            )


def classification_metrics(eval_pred: Any) -> dict[str, float]:
    """Accuracy, and for two classes the F1 of class 1 (GLUE's MRPC / QQP metrics).

    Args:
        eval_pred (`Any`): `EvalPrediction` with logits and labels.
    """
    logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
    pred = np.asarray(logits).argmax(-1)
    gold = np.asarray(eval_pred.label_ids)
    out = {"accuracy": float((pred == gold).mean())}
    if logits.shape[-1] == 2:
        tp = float(((pred == 1) & (gold == 1)).sum())
        fp = float(((pred == 1) & (gold == 0)).sum())
        fn = float(((pred == 0) & (gold == 1)).sum())
        out["f1"] = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return out


class _EMAStep(TrainerCallback):
    def __init__(self, trainer: ClassificationTrainer) -> None:
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.teacher.update(self.trainer.accelerator.unwrap_model(self.trainer.model))


class ClassificationTrainer(AtomicCheckpointMixin, EngineMixin, Trainer):
    r"""Fine-tunes a sequence classifier with cross-entropy and the tricks of [`ClassificationTricksConfig`].

    Args:
        model (`Any`): an `AutoModelForSequenceClassification`.
        args (`ClassificationTricksConfig | None`, *optional*): the arguments.
    """

    def __init__(
        self, model: Any = None, args: ClassificationTricksConfig | None = None, **kwargs: Any
    ) -> None:
        args = args or ClassificationTricksConfig(output_dir="classification-output")
        if not isinstance(args, ClassificationTricksConfig):
            raise TypeError(f"args must be a ClassificationTricksConfig, got {type(args).__name__}.")
        if model is None or model.get_input_embeddings() is None:
            raise ValueError(
                "ClassificationTrainer needs a classifier with input embeddings (it perturbs them)."
            )
        kwargs.setdefault("compute_metrics", classification_metrics)
        super().__init__(model=model, args=args, **kwargs)
        self.teacher: MomentumEncoder | None = None
        if args.self_distillation_weight > 0:
            self.teacher = (
                MomentumEncoder(model, momentum=args.self_distillation_momentum).to(args.device).eval()
            )
            self.add_callback(_EMAStep(self))
        self.last_components: dict[str, float] = {}

    # -- engine hooks and checkpoint state ------------------------------------------------------------------
    def _copies_model_weights(self) -> bool:
        return self.args.self_distillation_weight > 0

    def _weights_outside_forward(self) -> str:
        return "The self-distillation teacher (an exponential moving average of the model) copies its weights"

    def _library_state(self) -> dict[str, torch.Tensor]:
        if self.teacher is None:
            return {}
        return {
            f"teacher.{k}": v.detach().cpu().contiguous().clone()
            for k, v in self.teacher.state_dict().items()
        }

    def _library_state_required(self) -> bool:
        return self.teacher is not None

    def _load_library_state(self, tensors: dict[str, torch.Tensor]) -> None:
        if self.teacher is not None:
            self.teacher.load_state_dict({k[len("teacher.") :]: v for k, v in tensors.items()})

    # -- forward pieces ---------------------------------------------------------------------------------------
    @staticmethod
    def _embedded(model: Any, inputs: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        rest = {k: v for k, v in inputs.items() if k not in ("input_ids", "labels")}
        embeds = model.get_input_embeddings()(inputs["input_ids"])
        return embeds, rest

    def _logits(self, model: Any, embeds: torch.Tensor, rest: dict[str, Any]) -> torch.Tensor:
        return upcast(model(inputs_embeds=embeds, **rest).logits)

    def _base_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=self.args.label_smoothing_factor)

    def _self_distillation(self, logits: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor:
        teacher_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        teacher_logits = upcast(self.teacher(**teacher_inputs).logits)
        log_p = F.log_softmax(logits, dim=-1)
        log_t = F.log_softmax(teacher_logits, dim=-1)
        return (log_t.exp() * (log_t - log_p)).sum(-1).mean()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs["labels"]
        unwrapped = self.accelerator.unwrap_model(model)
        embeds, rest = self._embedded(unwrapped, inputs)
        logits = upcast(model(inputs_embeds=embeds, **rest).logits)
        loss = self._base_loss(logits, labels)
        components = {"ce": float(loss.detach())}
        if self.args.adversarial == "smart" and model.training:
            mask = inputs.get("attention_mask", torch.ones_like(inputs["input_ids"]))
            noise = torch.randn_like(embeds) * self.args.adv_init_mag * mask.unsqueeze(-1).to(embeds.dtype)
            delta = noise.detach().requires_grad_(True)
            adv_logits = upcast(model(inputs_embeds=embeds.detach() + delta, **rest).logits)
            grad = torch.autograd.grad(symmetric_kl(adv_logits, logits.detach()), delta)[0]
            delta = project_perturbation(
                normalized_ascent(delta.detach(), grad, self.args.adv_step_size), self.args.adv_max_norm
            )
            adv_logits = upcast(model(inputs_embeds=embeds + delta, **rest).logits)
            smart = symmetric_kl(adv_logits, logits)
            loss = loss + self.args.smart_weight * smart
            components["smart"] = float(smart.detach())
        if self.teacher is not None and model.training:
            kd = self._self_distillation(logits, inputs)
            loss = loss + self.args.self_distillation_weight * kd
            components["self_distillation"] = float(kd.detach())
        self.last_components = components
        if return_outputs:
            return loss, {"logits": logits}
        return loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.args.adversarial != "freelb":
            return super().training_step(model, inputs, num_items_in_batch)
        return self._freelb_step(model, self._prepare_inputs(inputs))

    def _freelb_step(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        """FreeLB: `adv_steps` ascents of the embedding perturbation, back-propagating the loss at each (divided
        by their number), so the optimiser step uses the average gradient over the perturbation's trajectory."""
        model.train()
        args = self.args
        unwrapped = self.accelerator.unwrap_model(model)
        labels = inputs["labels"]
        mask = inputs.get("attention_mask", torch.ones_like(inputs["input_ids"]))
        with torch.no_grad():
            start = unwrapped.get_input_embeddings()(inputs["input_ids"])
        delta = initial_perturbation(start, mask, args.adv_init_mag).requires_grad_(True)
        total = torch.zeros((), device=start.device)
        scale = args.adv_steps * args.gradient_accumulation_steps
        for step in range(args.adv_steps):
            embeds, rest = self._embedded(unwrapped, inputs)
            with self.compute_loss_context_manager():
                logits = upcast(model(inputs_embeds=embeds + delta, **rest).logits)
                loss = self._base_loss(logits, labels)
                if self.teacher is not None:
                    loss = loss + args.self_distillation_weight * self._self_distillation(logits, inputs)
            self.accelerator.backward(loss / scale)
            total += loss.detach() / args.adv_steps
            if step + 1 < args.adv_steps:
                grad = delta.grad.detach()
                delta = project_perturbation(
                    normalized_ascent(delta.detach(), grad, args.adv_step_size), args.adv_max_norm
                )
                delta.requires_grad_(True)
        self.last_components = {"ce": float(total)}
        return total.detach() / args.gradient_accumulation_steps
