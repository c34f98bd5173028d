"""`ImageTextContrastiveTrainer`: CLIP / SigLIP training of transformers' dual encoders with `Trainer`.

The model is a `CLIPModel`, `SiglipModel` or `VisionTextDualEncoderModel` (its own `forward` embeds both
modalities; its `logit_scale` / `logit_bias` are the learnable scale and bias of the loss). The trainer only
decides how a batch becomes a loss:

- `loss="clip"`: [`CLIPLoss`] (symmetric InfoNCE, local loss against features gathered with gradient);
- `loss="siglip"`: [`SigLIPLoss`] (sigmoid loss with learnable bias, negatives from every process);
- `loss="improved"`: the improved CLIP recipe of Fini et al. 2023 ([`ImprovedCLIPLoss`]): global view plus
  augmented views with their own projectors and the optional self-supervised add-ons.

The learnable log-scale is clipped to `log(max_logit_scale)` after every optimiser step (CLIP clips at 100).
LoRA goes through `peft_config=` on either tower (`target_modules` naming its layers); the scale and bias stay
trainable unless `train_logit_scale=False`. GradCache (`gradcache_mini_batch_size`) embeds the batch in
mini-batches of image-caption pairs without a graph, takes the full-batch loss on those embeddings, then
re-embeds each mini-batch with its random state replayed (dropout, drop-path); the augmentation was drawn once
in the collator, so it is the same in both passes.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

from hf_contrastive.core import distributed
from hf_contrastive.core.checkpoint import AtomicCheckpointMixin
from hf_contrastive.core.data.checks import require_rows
from hf_contrastive.core.engines import EngineMixin, gradient_sync_off
from hf_contrastive.core.hub.mixin import CardTrainerMixin
from hf_contrastive.core.losses.gradcache import RandomState
from hf_contrastive.core.peft import apply_peft
from hf_contrastive.vision import augment
from hf_contrastive.vision.data import ImageTextCollator
from hf_contrastive.vision.improved import ImprovedCLIPConfig, ImprovedCLIPLoss
from hf_contrastive.vision.losses import CLIPLoss, SigLIPLoss
from hf_contrastive.vision.modeling import (
    check_processor_matches,
    clamp_logit_scale,
    dual_encoder_family,
    dual_encoder_forward,
    image_side,
    logit_scale_and_bias,
    unwrap_dual_encoder,
)

__all__ = ["ImageTextContrastiveConfig", "ImageTextContrastiveTrainer", "IMAGE_TEXT_LOSSES"]

IMAGE_TEXT_LOSSES = ("auto", "clip", "siglip", "improved")


@dataclass
class ImageTextContrastiveConfig(TrainingArguments):
    r"""Training arguments for [`ImageTextContrastiveTrainer`].

    Args:
        loss (`str`, *optional*, defaults to `"auto"`): `"clip"`, `"siglip"`, `"improved"` (the improved CLIP
            recipe), or `"auto"`: SigLIP for a `SiglipModel`, CLIP otherwise.
        label_smoothing (`float`, *optional*, defaults to `0.0`): label smoothing of the CLIP loss (the improved
            recipe applies its own 0.1 to the augmented terms only).
        gather_across_devices (`bool`, *optional*): negatives from every process (`None`: when distributed).
        max_logit_scale (`float`, *optional*, defaults to `100.0`): the learnable scale is clipped to this after
            every optimiser step (CLIP's 100).
        train_logit_scale (`bool`, *optional*, defaults to `True`): keep the scale (and SigLIP's bias) trainable,
            also under LoRA.
        freeze_vision_model (`bool`, *optional*, defaults to `False`): freeze the vision tower (not its projection).
        freeze_text_model (`bool`, *optional*, defaults to `False`): freeze the text tower (not its projection);
            e.g. a pretrained text encoder paired with a vision tower trained from scratch.
        image_column (`str`, *optional*, defaults to `"image"`): the dataset's image column.
        caption_column (`str`, *optional*, defaults to `"captions"`): the caption column (a string or a list).
        max_seq_length (`int`, *optional*, defaults to `64`): caption truncation length.
        caption_sampling (`str`, *optional*, defaults to `"random"`): one caption per image and batch, `"random"`
            or `"first"`.
        on_bad_image (`str`, *optional*, defaults to `"skip"`): `"skip"` (counted, logged) or `"raise"`.
        augmented_views (`int`, *optional*): augmented views per pair for `loss="improved"` (default 2).
        improved (`dict`, *optional*): settings of [`ImprovedCLIPConfig`] for `loss="improved"`.
        gradcache_mini_batch_size (`int`, *optional*): image-caption pairs per forward with GradCache.
        siglip_bias_init (`float`, *optional*, defaults to `-10.0`): initial value of the learnable bias that
            `loss="siglip"` adds when the model has none (SigLIP's -10).
        remove_unused_columns (`bool`, *optional*, defaults to `False`): the collator needs the raw columns.
    """

    loss: str = field(default="auto", metadata={"help": f"one of {IMAGE_TEXT_LOSSES}"})
    label_smoothing: float = field(default=0.0)
    gather_across_devices: bool | None = field(default=None)
    max_logit_scale: float = field(default=100.0)
    train_logit_scale: bool = field(default=True)
    freeze_vision_model: bool = field(default=False)
    freeze_text_model: bool = field(default=False)
    image_column: str = field(default="image")
    caption_column: str = field(default="captions")
    max_seq_length: int | None = field(default=64)
    caption_sampling: str = field(default="random")
    on_bad_image: str = field(default="skip")
    augmented_views: int | None = field(default=None)
    improved: dict | None = field(default=None)
    gradcache_mini_batch_size: int | None = field(default=None)
    siglip_bias_init: float = field(default=-10.0)
    remove_unused_columns: bool = field(default=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss not in IMAGE_TEXT_LOSSES:
            raise ValueError(f"loss must be one of {IMAGE_TEXT_LOSSES}, got {self.loss!r}.")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}.")
        if self.max_logit_scale <= 1.0:
            raise ValueError(f"max_logit_scale must be > 1 (CLIP uses 100), got {self.max_logit_scale}.")
        if self.gradcache_mini_batch_size is not None and self.gradcache_mini_batch_size < 1:
            raise ValueError(f"gradcache_mini_batch_size must be >= 1, got {self.gradcache_mini_batch_size}.")
        if self.augmented_views is not None and self.augmented_views < 1:
            raise ValueError(f"augmented_views must be >= 1, got {self.augmented_views}.")
        if self.loss == "improved" and self.gradcache_mini_batch_size is not None:
            raise ValueError(
                "GradCache is not available with loss='improved' (its augmented views and add-on heads need the "
                "whole batch in one pass); lower per_device_train_batch_size or use loss='clip' with GradCache."
            )
        if self.improved is not None:
            ImprovedCLIPConfig(**self.improved)  # unknown keys or bad values fail here, not mid-training


class _ClampLogitScale(TrainerCallback):
    """Clip the learnable log-scale after every optimiser step (and zero the loss module's gradients)."""

    def __init__(self, trainer: ImageTextContrastiveTrainer) -> None:
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        clamp_logit_scale(self.trainer.model, args.max_logit_scale)
        self.trainer.loss_fn.zero_grad(set_to_none=True)
        update = getattr(self.trainer.loss_fn, "update_target", None)
        if callable(update):  # momentum targets of the improved recipe's BYOL add-on
            update()


class ImageTextContrastiveTrainer(AtomicCheckpointMixin, EngineMixin, CardTrainerMixin, Trainer):
    r"""`Trainer` for image-text contrastive learning on `CLIPModel`, `SiglipModel`, `VisionTextDualEncoderModel`.

    Args:
        model (`Any`): the dual encoder.
        args ([`ImageTextContrastiveConfig`], *optional*): training arguments.
        train_dataset (`Any`): `datasets.Dataset` rows with an image and caption(s).
        eval_dataset (`Any`, *optional*): rows of the same layout (reports `eval_loss`).
        processing_class (`Any`): the model's processor (image processor + tokenizer); checked against the towers.
        data_collator (`Any`, *optional*): defaults to an [`ImageTextCollator`] built from `args`.
        image_transform (`Any`, *optional*): training transform of the global view (default: the processor's).
        augmented_image_transform / global_caption_transform / augmented_caption_transform (`Any`, *optional*):
            the improved recipe's view transforms (defaults from `hf_contrastive.vision.augment` at the
            processor's image size and normalisation).
        evaluators (`list`, *optional*): callables `model -> dict` run by `evaluate()` (e.g. an
            [`ImageTextRetrievalEvaluator`]), reported with the `eval_` prefix.
        loss (`nn.Module`, *optional*): a loss module to use instead of the one `args.loss` names.
        peft_config (`Any`, *optional*): a `peft` config; the model is wrapped with `get_peft_model`.
    """

    card_template = "image_text_dual_encoder.md"
    card_pipeline_tag = "zero-shot-image-classification"
    card_tags = ("clip", "image-text", "contrastive-learning", "hf-contrastive")

    def __init__(
        self,
        model: Any = None,
        args: ImageTextContrastiveConfig | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        data_collator: Any = None,
        image_transform: Any = None,
        augmented_image_transform: Any = None,
        global_caption_transform: Any = None,
        augmented_caption_transform: Any = None,
        evaluators: list | None = None,
        loss: nn.Module | None = None,
        peft_config: Any = None,
        callbacks: list | None = None,
        **kwargs: Any,
    ) -> None:
        if args is None:
            args = ImageTextContrastiveConfig(output_dir="hf-contrastive-output")
        if not isinstance(args, ImageTextContrastiveConfig):
            raise TypeError(f"args must be an ImageTextContrastiveConfig, got {type(args).__name__}.")
        if model is None:
            raise ValueError(
                "ImageTextContrastiveTrainer needs a model (CLIPModel, SiglipModel or "
                "VisionTextDualEncoderModel)."
            )
        self.family = dual_encoder_family(model)
        if processing_class is None:
            raise ValueError("ImageTextContrastiveTrainer needs processing_class= (the model's processor).")
        check_processor_matches(model, processing_class)
        if train_dataset is None:
            raise ValueError("ImageTextContrastiveTrainer needs a train_dataset.")
        require_rows(train_dataset, name="train_dataset", owner=type(self).__name__)
        require_rows(eval_dataset, name="eval_dataset", owner=type(self).__name__)
        kind = args.loss if args.loss != "auto" else ("siglip" if self.family == "siglip" else "clip")
        self.loss_kind = (
            kind if loss is None else ("improved" if isinstance(loss, ImprovedCLIPLoss) else kind)
        )
        views = 0
        if self.loss_kind == "improved":
            views = args.augmented_views or 2
        if data_collator is None:
            if views:
                augmented_image_transform, global_caption_transform, augmented_caption_transform = (
                    _improved_transforms(
                        processing_class,
                        augmented_image_transform,
                        global_caption_transform,
                        augmented_caption_transform,
                    )
                )
            data_collator = ImageTextCollator(
                processing_class,
                image_column=args.image_column,
                caption_column=args.caption_column,
                family=self.family,
                max_length=args.max_seq_length,
                image_transform=image_transform,
                caption_sampling=args.caption_sampling,
                augmented_views=views,
                augmented_image_transform=augmented_image_transform,
                global_caption_transform=global_caption_transform,
                augmented_caption_transform=augmented_caption_transform,
                on_bad_image=args.on_bad_image,
                seed=args.seed,
            )
        if isinstance(data_collator, ImageTextCollator):
            data_collator.check_columns(train_dataset.column_names)
            if eval_dataset is not None:
                data_collator.check_columns(eval_dataset.column_names)
        base = unwrap_dual_encoder(model)
        towers = (base.vision_model, base.text_model)
        if self.family == "dual" and all(
            getattr(t, "supports_gradient_checkpointing", False) for t in towers
        ):
            # VisionTextDualEncoderModel does not declare the support its two towers have: with it,
            # `activation_checkpointing=True` reaches both towers' layers instead of being refused.
            base.supports_gradient_checkpointing = True
        if args.freeze_vision_model:
            base.vision_model.requires_grad_(False)
        if args.freeze_text_model:
            base.text_model.requires_grad_(False)
        if peft_config is not None:
            model = apply_peft(model, peft_config)
            base = unwrap_dual_encoder(model)
        if args.train_logit_scale:
            base.logit_scale.requires_grad_(True)
            if getattr(base, "logit_bias", None) is not None:
                base.logit_bias.requires_grad_(True)
        else:
            base.logit_scale.requires_grad_(False)
        self.loss_fn = loss if loss is not None else self._build_loss(args, base)
        self.evaluators = list(evaluators or [])
        self._components: dict[str, list[float]] = {}  # loss components since the last log line
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            data_collator=data_collator,
            callbacks=callbacks,
            **kwargs,
        )
        self.add_callback(_ClampLogitScale(self))
        self.loss_fn.to(self.args.device)

    # -- building ---------------------------------------------------------------------------------------
    def _build_loss(self, args: ImageTextContrastiveConfig, base: Any) -> nn.Module:
        if self.loss_kind == "siglip":
            # A model without a bias (CLIPModel, VisionTextDualEncoderModel) trains one held by the loss.
            own_bias = None if getattr(base, "logit_bias", None) is not None else args.siglip_bias_init
            return SigLIPLoss(gather=args.gather_across_devices, bias_init=own_bias)
        if self.loss_kind == "improved":
            image_dim, text_dim = _pooled_dims(base)
            config = ImprovedCLIPConfig(**(args.improved or {}))
            return ImprovedCLIPLoss(image_dim, text_dim, config)
        return CLIPLoss(label_smoothing=args.label_smoothing, gather=args.gather_across_devices)

    def _parameters_outside_model(self) -> list[nn.Parameter]:
        return [p for p in self.loss_fn.parameters() if p.requires_grad]

    def _uses_gradcache(self) -> bool:
        return bool(self.args.gradcache_mini_batch_size)

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model) if model is not None else super().create_optimizer()
        extra = [p for p in self.loss_fn.parameters() if p.requires_grad]
        if extra and not any(p is q for g in optimizer.param_groups for p in g["params"] for q in extra):
            optimizer.add_param_group({"params": extra, "weight_decay": 0.0})
        return optimizer

    # -- state outside the model (the improved recipe's heads) ------------------------------------------
    def _library_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.loss_fn.state_dict().items()}

    def _load_library_state(self, tensors: dict[str, torch.Tensor]) -> None:
        if tensors:
            self.loss_fn.load_state_dict(tensors)

    def _library_state_required(self) -> bool:
        return len(self.loss_fn.state_dict()) > 0

    # -- the loss ---------------------------------------------------------------------------------------
    def _text_inputs(self, inputs: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
        return {
            k[len(prefix) :]: v
            for k, v in inputs.items()
            if k.startswith(prefix) and k[len(prefix) :] in ("input_ids", "attention_mask", "token_type_ids")
        }

    def _loss_on(
        self, model: Any, image: torch.Tensor, text: torch.Tensor, views: tuple | None = None
    ) -> Any:
        scale, bias = logit_scale_and_bias(model)
        if self.loss_kind == "siglip":
            return self.loss_fn(image, text, scale, bias)
        if self.loss_kind == "improved":
            image_views, text_views, image_pooled, text_pooled = (
                views if views is not None else ([], [], None, None)
            )
            return self.loss_fn(
                image,
                text,
                scale,
                image_views,
                text_views,
                image_global_pooled=image_pooled,
                text_global_pooled=text_pooled,
            )
        return self.loss_fn(image, text, scale)

    def _scale_factor(self, model: Any, local_rows: int) -> float:
        # Each rank's loss is a mean over its own rows: with unequal local batches (the last batch of an epoch)
        # this factor keeps the DDP-averaged gradient equal to the gradient of the global batch.
        return (
            distributed.global_mean_factor(local_rows)
            if model.training and distributed.is_distributed()
            else 1.0
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        pixel_values = inputs["pixel_values"]
        text = self._text_inputs(inputs)
        n = pixel_values.shape[0]
        views = None
        if "aug_pixel_values" in inputs and self.loss_kind == "improved":
            aug_text = self._text_inputs(inputs, "aug_")
            pixel_values = torch.cat([pixel_values, inputs["aug_pixel_values"]])
            text = {k: torch.cat([v, aug_text[k]]) for k, v in text.items()}
        out = dual_encoder_forward(model, pixel_values, **text)
        if out.image_embeds.shape[0] > n:
            views = (
                list(out.image_pooled[n:].split(n)),
                list(out.text_pooled[n:].split(n)),
                out.image_pooled[:n],
                out.text_pooled[:n],
            )
        result = self._loss_on(model, out.image_embeds[:n], out.text_embeds[:n], views)
        loss = result.loss * self._scale_factor(model, n)
        if not torch.isfinite(loss.detach()):
            raise FloatingPointError(
                f"Loss became {float(loss.detach())} at step {self.state.global_step}: lower the learning rate or "
                "check the data."
            )
        if model.training:
            for k, v in result.components.items():
                self._components.setdefault(k, []).append(float(v))
        return (
            (loss, {"image_embeds": out.image_embeds[:n], "text_embeds": out.text_embeds[:n]})
            if return_outputs
            else loss
        )

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.args.gradcache_mini_batch_size is not None:
            model.train()
            if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
                self.optimizer.train()
            inputs = self._prepare_inputs(inputs)
            with self.compute_loss_context_manager():
                loss = self._gradcache_step(model, inputs)
        else:
            loss = super().training_step(model, inputs, num_items_in_batch)
        # The loss's own parameters (the improved recipe's heads) live outside the DDP-wrapped model: average
        # their gradients here, or the ranks' heads drift apart.
        distributed.average_gradients(self.loss_fn.parameters())
        return loss.detach()

    def _gradcache_step(self, model, inputs) -> torch.Tensor:
        """GradCache over image-caption pairs: the full-batch loss at the activation memory of one mini-batch."""
        ga = self.current_gradient_accumulation_steps
        pixel_values = inputs["pixel_values"]
        text = self._text_inputs(inputs)
        n = pixel_values.shape[0]
        size = self.args.gradcache_mini_batch_size
        chunks = [torch.arange(s, min(s + size, n)) for s in range(0, n, size)]
        unwrapped = self.accelerator.unwrap_model(model)
        factor = self._scale_factor(model, n) / ga

        def run(m, rows):
            dev = pixel_values.device
            idx = rows.to(dev)
            return dual_encoder_forward(m, pixel_values[idx], **{k: v[idx] for k, v in text.items()})

        states, images, texts = [], [], []
        with torch.no_grad():
            for rows in chunks:
                states.append(RandomState())
                o = run(unwrapped, rows)
                images.append(o.image_embeds.detach())
                texts.append(o.text_embeds.detach())
        image_leaf = torch.cat(images).requires_grad_(True)
        text_leaf = torch.cat(texts).requires_grad_(True)
        # The scale and bias are model parameters: their gradient is taken on detached copies here and handed
        # to the parameters in the last re-forward, inside the synchronised backward.
        scale_param = unwrap_dual_encoder(unwrapped).logit_scale
        bias_param = getattr(unwrap_dual_encoder(unwrapped), "logit_bias", None)
        scale_leaf = scale_param.detach().clone().requires_grad_(scale_param.requires_grad)
        bias_leaf = (
            bias_param.detach().clone().requires_grad_(bias_param.requires_grad)
            if bias_param is not None
            else None
        )
        if self.loss_kind == "siglip":  # (bias None: the loss's own bias, a loss parameter)
            result = self.loss_fn(image_leaf, text_leaf, scale_leaf.exp(), bias_leaf)
        else:
            result = self.loss_fn(image_leaf, text_leaf, scale_leaf.exp())
        self.accelerator.backward(result.loss * factor)
        after_loss = RandomState()
        no_sync = gradient_sync_off(self, model)
        last = len(chunks) - 1
        for k, (rows, state) in enumerate(zip(chunks, states)):
            ctx = no_sync() if (no_sync is not None and k < last) else contextlib.nullcontext()
            with ctx:
                state.restore()
                o = run(model, rows)
                r = rows.to(image_leaf.device)
                total = (o.image_embeds * image_leaf.grad[r].to(o.image_embeds.dtype)).sum() + (
                    o.text_embeds * text_leaf.grad[r].to(o.text_embeds.dtype)
                ).sum()
                if k == last:
                    base = unwrap_dual_encoder(model)
                    if scale_leaf.grad is not None:
                        total = total + (base.logit_scale * scale_leaf.grad).sum()
                    if bias_leaf is not None and bias_leaf.grad is not None:
                        total = total + (base.logit_bias * bias_leaf.grad).sum()
                total.backward()
        after_loss.restore()
        for key, value in result.components.items():
            self._components.setdefault(key, []).append(float(value))
        return result.loss.detach() * self._scale_factor(model, n) / ga

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs and self._components:
            for k, values in self._components.items():
                logs[k] = round(sum(values) / len(values), 6)
            self._components.clear()
        super().log(logs, *args, **kwargs)

    # -- evaluation -------------------------------------------------------------------------------------
    def evaluate(
        self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if eval_dataset is not None or self.eval_dataset is not None:
            metrics.update(super().evaluate(eval_dataset, ignore_keys, metric_key_prefix))
        elif not self.evaluators:
            raise ValueError("Nothing to evaluate: pass eval_dataset= or evaluators= to the trainer.")
        if self.evaluators:
            model = self.accelerator.unwrap_model(self.model)
            figures = {}
            for evaluator in self.evaluators:
                figures.update({f"{metric_key_prefix}_{k}": float(v) for k, v in evaluator(model).items()})
            metrics.update(figures)
            self.log(figures)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    # -- card -------------------------------------------------------------------------------------------
    def card_training(self) -> dict[str, Any]:
        cfg = getattr(self.loss_fn, "config_dict", lambda: {})()
        return {
            "loss": f"`{type(self.loss_fn).__name__}` ({', '.join(f'{k}={v}' for k, v in cfg.items())})",
            "training pairs": len(self.train_dataset),
            "frozen towers": ", ".join(
                name
                for name, frozen in (
                    ("vision", self.args.freeze_vision_model),
                    ("text", self.args.freeze_text_model),
                )
                if frozen
            )
            or "none",
            "logit scale clipped at": self.args.max_logit_scale,
            "GradCache mini-batch": self.args.gradcache_mini_batch_size,
        }

    def card_details(self) -> dict[str, Any]:
        base = unwrap_dual_encoder(self.model)
        return {
            "title": f"{type(base).__name__} trained with hf-contrastive",
            "description": (
                "An image-text dual encoder trained with a contrastive objective "
                f"({self.loss_kind}) using [hf-contrastive](https://github.com/hf-contrastive/hf-contrastive)."
            ),
            "method": {
                "clip": "CLIP (Radford et al. 2021)",
                "siglip": "SigLIP (Zhai et al. 2023)",
                "improved": "improved CLIP recipe (Fini et al. 2023)",
            }[self.loss_kind],
            "objective": type(self.loss_fn).__name__,
            "model_class": type(base).__name__,
            "family": self.family,
            "image_size": getattr(getattr(base.config, "vision_config", None), "image_size", None),
        }

    def save_dual_encoder(self, output_dir: str, merge_lora: bool = True) -> Any:
        """Save a standalone dual encoder (LoRA merged into a copy) with its processor and card; return it."""
        model = self.accelerator.unwrap_model(self.model)
        if merge_lora and hasattr(model, "merge_and_unload"):
            model = copy.deepcopy(model).merge_and_unload()
        previous = self.model
        try:
            self.model = model
            self._save(output_dir)
        finally:
            self.model = previous
        return model


def _pooled_dims(base: Any) -> tuple[int, int]:
    vision = getattr(base.config, "vision_config", None)
    text = getattr(base.config, "text_config", None)
    if dual_encoder_family(base) == "siglip":
        return int(vision.hidden_size), int(
            text.projection_size if getattr(text, "projection_size", None) else text.hidden_size
        )
    return int(vision.hidden_size), int(text.hidden_size)


def _improved_transforms(processor: Any, image_tf: Any, global_caption_tf: Any, aug_caption_tf: Any) -> tuple:
    """Default view transforms of the improved recipe at the processor's size and normalisation."""
    image_processor = getattr(processor, "image_processor", processor)
    size = getattr(image_processor, "crop_size", None) or getattr(image_processor, "size", None)
    side = image_side(size)
    if side is None:
        raise ValueError(
            f"Cannot read the image size from the processor ({size!r}); pass augmented_image_transform=."
        )
    mean = list(getattr(image_processor, "image_mean", [0.5, 0.5, 0.5]))
    std = list(getattr(image_processor, "image_std", [0.5, 0.5, 0.5]))
    if image_tf is None:
        image_tf = augment.strong_view_transform(side, mean, std)
    if global_caption_tf is None:
        global_caption_tf = augment.weak_caption
    if aug_caption_tf is None:
        aug_caption_tf = augment.strong_caption
    return image_tf, global_caption_tf, aug_caption_tf
