"""Recipe task `image-text`: train an image-text dual encoder (CLIP / SigLIP / the improved CLIP recipe),
report retrieval recall before and after, save it with its card.

A recipe with `task: image-text` has these sections::

    model:  {name_or_path: PATH}                   # a saved CLIPModel / SiglipModel / VisionTextDualEncoderModel
      or    {text_name_or_path: ${minilm}, vision: {image_size: 64, patch_size: 8, ...}, projection_dim: 128}
    data:   {root: ${data}/vision/coco-mini, train_split: train, eval_split: val}
    method: {loss: clip, label_smoothing: 0.0, freeze_text_model: true}     # ImageTextMethod
    args:   {learning_rate: 1e-3, per_device_train_batch_size: 40, ...}      # ImageTextContrastiveConfig fields
    lora:   {r: 8, lora_alpha: 16, target_modules: [query, value]}          # optional

The second `model` form builds a `VisionTextDualEncoderModel` from a pretrained text tower and a ViT vision
tower initialised at random from the given `ViTConfig` settings (no vision weights are needed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModel,
    AutoProcessor,
    AutoTokenizer,
    CLIPImageProcessor,
    VisionTextDualEncoderConfig,
    VisionTextDualEncoderModel,
    VisionTextDualEncoderProcessor,
    ViTConfig,
    ViTModel,
)

from hf_contrastive.core.recipes import RecipeTask, build_args, lora_config, read_method
from hf_contrastive.vision import augment
from hf_contrastive.vision.data import coco_mini_dir, load_coco_captions
from hf_contrastive.vision.evaluation import ImageTextRetrievalEvaluator
from hf_contrastive.vision.trainer import ImageTextContrastiveConfig, ImageTextContrastiveTrainer

__all__ = ["ImageTextMethod", "RECIPE_TASK", "build_dual_encoder", "run_image_text_recipe"]

MODEL_SCHEMA: dict[str, Any] = {
    "name_or_path": str,
    "text_name_or_path": str,
    "vision": dict[str, Any],
    "projection_dim": int,
    "seed": int,
}
"""The `model` keys of `image-text` recipes."""

DATA_SCHEMA: dict[str, Any] = {"root": str, "train_split": str, "eval_split": str, "dataset_name": str}
"""The `data` keys of `image-text` recipes: a COCO-style caption folder and its splits."""


@dataclass
class ImageTextMethod:
    r"""The `method` section of `image-text` recipes (each is the [`ImageTextContrastiveConfig`] field of the same
    name).

    Args:
        loss (`str`, *optional*, defaults to `"auto"`): `clip`, `siglip`, `improved` or `auto` (SigLIP for a
            `SiglipModel`, CLIP otherwise).
        label_smoothing (`float`, *optional*, defaults to 0.0): of the CLIP loss.
        max_logit_scale (`float`, *optional*, defaults to 100.0): CLIP's clip of the learnable scale.
        freeze_text_model (`bool`, *optional*, defaults to `False`): freeze the text tower (its projection trains).
        freeze_vision_model (`bool`, *optional*, defaults to `False`): freeze the vision tower.
        improved (`dict`, *optional*): `ImprovedCLIPConfig` settings for `loss="improved"`.
        augmented_views (`int`, *optional*): augmented views per pair for `loss="improved"` (2).
        gradcache_mini_batch_size (`int`, *optional*): pairs per forward with GradCache.
    """

    loss: str = "auto"
    label_smoothing: float = 0.0
    max_logit_scale: float = 100.0
    freeze_text_model: bool = False
    freeze_vision_model: bool = False
    improved: dict | None = field(default=None)
    augmented_views: int | None = None
    gradcache_mini_batch_size: int | None = None


def build_dual_encoder(model_cfg: dict[str, Any]) -> tuple[Any, Any]:
    """The model and processor a recipe's `model` section describes (see the module docstring)."""
    cfg = dict(model_cfg)
    if "name_or_path" in cfg:
        path = cfg.pop("name_or_path")
        if cfg:
            raise ValueError(
                f"With model.name_or_path the model section takes no other key, got {sorted(cfg)}."
            )
        return AutoModel.from_pretrained(path), AutoProcessor.from_pretrained(path)
    if "text_name_or_path" not in cfg or "vision" not in cfg:
        raise ValueError(
            "The model section needs name_or_path (a saved dual encoder) or text_name_or_path + vision (a ViT "
            "config to train from scratch)."
        )
    torch.manual_seed(int(cfg.get("seed", 0)))
    vision_cfg = ViTConfig(**cfg["vision"])
    vision = ViTModel(vision_cfg, add_pooling_layer=True)
    text = AutoModel.from_pretrained(cfg["text_name_or_path"])
    config = VisionTextDualEncoderConfig.from_vision_text_configs(
        vision.config, text.config, projection_dim=int(cfg.get("projection_dim", 128))
    )
    model = VisionTextDualEncoderModel(config=config, vision_model=vision, text_model=text)
    size = int(vision_cfg.image_size)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_mean=list(augment.IMAGENET_MEAN),
        image_std=list(augment.IMAGENET_STD),
    )
    tokenizer = AutoTokenizer.from_pretrained(cfg["text_name_or_path"])
    return model, VisionTextDualEncoderProcessor(image_processor=image_processor, tokenizer=tokenizer)


def run_image_text_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """Train the dual encoder as the recipe says, with retrieval recall on the eval split before and after, and
    save it (LoRA merged, processor and card written) to `output_dir/final`."""
    data_cfg = dict(recipe.get("data") or {})
    root = Path(data_cfg.get("root") or coco_mini_dir())
    method = read_method(ImageTextMethod, recipe.get("method"), task="image-text")
    defaults: dict[str, Any] = {"output_dir": "hf-contrastive-output/image-text", "report_to": "none"}
    args = build_args(ImageTextContrastiveConfig, recipe.get("args"), method=method, defaults=defaults)
    model, processor = build_dual_encoder(dict(recipe.get("model") or {}))
    train = load_coco_captions(data_cfg.get("train_split", "train"), root)
    evaluation = load_coco_captions(data_cfg.get("eval_split", "val"), root)
    side = int(model.config.vision_config.image_size)
    evaluator = ImageTextRetrievalEvaluator(
        evaluation, processor, max_length=args.max_seq_length, name="eval"
    )
    trainer = ImageTextContrastiveTrainer(
        model=model,
        args=args,
        train_dataset=train,
        processing_class=processor,
        image_transform=augment.global_view_transform(
            side, augment.IMAGENET_MEAN, augment.IMAGENET_STD, flip=True
        ),
        evaluators=[evaluator],
        peft_config=lora_config(recipe.get("lora")),
    )
    results: dict[str, Any] = {"before": evaluator(trainer.model)}
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    results["after"] = evaluator(trainer.accelerator.unwrap_model(trainer.model))
    final = Path(args.output_dir) / "final"
    if args.should_save:
        trainer.save_dual_encoder(str(final))
    results["output"] = str(final.resolve())
    results["is_main_process"] = bool(args.should_save)
    return results


RECIPE_TASK = RecipeTask(
    name="image-text",
    runner=run_image_text_recipe,
    method=ImageTextMethod,
    description="image-text dual encoder (CLIP / SigLIP / improved CLIP), retrieval recall before/after",
    model_schema=MODEL_SCHEMA,
    data_schema=DATA_SCHEMA,
    args_classes=(ImageTextContrastiveConfig,),
)
