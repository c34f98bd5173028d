"""Recipe task `cosmo`: train COSMO (a causal LM with gated cross-attention and a contrastive head) on COCO
captions, report caption perplexity and image-text recall before and after, save the model with its card.

A recipe with `task: cosmo` has these sections::

    model:  {name_or_path: smollm2, vision_config: {model_type: vit, ...}}   # or vision_name_or_path: a folder
            + CosmoConfig settings (num_latents, resampler_depth, contrastive_dim, ...)
    data:   {root: ${data}/vision/coco-mini, train_split: train, eval_split: val, max_eval_images: ...}
    method: {unimodal_depth: 15, contrastive_weight: 1.0, contrastive_temperature: 0.2, ...}   # CosmoMethod
    args:   CosmoTrainingArguments fields (freeze: lm | text_layers | none, ...)
    lora:   {r: 8, lora_alpha: 16, target_modules: [q_proj, v_proj]}     # optional, LoRA on the LM

Training rows are every (image, caption) pair of the training split, each read as `<image>` + caption. The
figures (see [`evaluate_cosmo`]) are measured on the evaluation split before and after training:
`perplexity` (captions given their image) and image-text recall@1/5 with the contrastive embeddings.
`name_or_path: smollm2` means the packaged SmolLM2-135M-Instruct (cached as a plain folder once).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from hf_contrastive.core.hub.card import EvalEntry
from hf_contrastive.core.recipes import (
    RecipeError,
    RecipeTask,
    build_args,
    lora_config,
    read_method,
    schema_of,
)
from hf_contrastive.vision.close_recipes import resolve_lm_path
from hf_contrastive.vision.cosmo import (
    CosmoCollator,
    CosmoConfig,
    CosmoForCausalLM,
    CosmoTrainer,
    CosmoTrainingArguments,
    caption_perplexity,
    coco_caption_rows,
    retrieval_embeddings,
)
from hf_contrastive.vision.data import coco_mini_dir, load_coco_captions
from hf_contrastive.vision.evaluation import image_text_retrieval_metrics

__all__ = ["DATA_SCHEMA", "MODEL_SCHEMA", "RECIPE_TASK", "CosmoMethod", "evaluate_cosmo", "run_cosmo_recipe"]


@dataclass
class CosmoMethod:
    r"""The `method` section of `cosmo` recipes: COSMO's settings (Wang et al. 2024), the [`CosmoConfig`] fields
    of the same name.

    Args:
        unimodal_depth (`int`, *optional*):
            Text-only layers (default: half of the LM's layers, COSMO's 12 of 24).
        cross_attn_interval (`int`, *optional*, defaults to 2):
            A gated cross-attention block every this many layers from the split.
        cross_attn_ff_mult (`int`, *optional*, defaults to 2):
            Width of the block's feed-forward over the LM's width ("compressed x2").
        contrastive_weight (`float`, *optional*, defaults to 1.0):
            Weight of the contrastive loss on image-text batches (0: the LM loss alone).
        contrastive_temperature (`float`, *optional*, defaults to 0.2):
            Initial learnable log-scale `t` (logits = similarity * exp(t)).
    """

    unimodal_depth: int | None = None
    cross_attn_interval: int = 2
    cross_attn_ff_mult: int = 2
    contrastive_weight: float = 1.0
    contrastive_temperature: float = 0.2


_METHOD_FIELDS = tuple(CosmoMethod.__dataclass_fields__)

MODEL_SCHEMA: dict[str, Any] = {
    "name_or_path": str,
    "vision_config": dict[str, Any],
    "vision_name_or_path": str,
    **schema_of(
        CosmoConfig.__init__,
        skip=("text_config", "vision_config", "image_token_id", "lm_name_or_path", *_METHOD_FIELDS),
    ),
}
"""The `model` keys of `cosmo` recipes: the language model (`smollm2` or a folder), the vision tower (a config
to train from scratch, or a folder) and [`CosmoConfig`] settings."""

DATA_SCHEMA: dict[str, Any] = {
    "root": str,
    "train_split": str,
    "eval_split": str,
    "max_eval_images": int,
    "ppl_captions": int,
    "eval_batch_size": int,
    "dataset_name": str,
}
"""The `data` keys of `cosmo` recipes: the COCO-style caption folder, its splits and the evaluation settings."""


def evaluate_cosmo(
    model: CosmoForCausalLM, data: Any, max_length: int = 32, ppl_captions: int = 5, batch_size: int = 32
) -> dict[str, float]:
    """Caption perplexity and image-text recall@1/5 of a COSMO model on one row per image (`image`, `captions`).

    Args:
        model ([`CosmoForCausalLM`]): the model.
        data (`datasets.Dataset`): one row per image with `image` and `captions` (as `load_coco_captions` gives).
        max_length (`int`, *optional*, defaults to `32`): caption tokens kept.
        ppl_captions (`int`, *optional*, defaults to `5`): captions per image in the perplexity.
        batch_size (`int`, *optional*, defaults to `32`): items per forward.

    Returns:
        `{"perplexity", "nll_per_token", "tokens", "image_to_text_recall@K", "text_to_image_recall@K",
        "chance_..."}` (recall in %).
    """
    collator = CosmoCollator.from_model(model, max_length=max_length)
    rows = [
        {"image": image, "text": caption}
        for image, captions in zip(data["image"], data["captions"])
        for caption in list(captions)[:ppl_captions]
    ]
    figures: dict[str, float] = dict(caption_perplexity(model, rows, collator, batch_size=batch_size))
    texts, owners = [], []
    for i, captions in enumerate(data["captions"]):
        texts.extend(captions)
        owners.extend([i] * len(captions))
    images, text_emb = retrieval_embeddings(
        model, list(data["image"]), texts, collator, batch_size=batch_size
    )
    figures.update(image_text_retrieval_metrics(images, text_emb, owners, ks=(1, 5)))
    return figures


def _build_model(model_cfg: dict[str, Any], method: CosmoMethod) -> CosmoForCausalLM:
    if ("vision_config" in model_cfg) == ("vision_name_or_path" in model_cfg):
        raise RecipeError(
            "The cosmo recipe's model section needs exactly one of vision_config (a config with model_type, trained "
            "from scratch) and vision_name_or_path (a vision backbone folder)."
        )
    source = str(model_cfg.pop("name_or_path", "smollm2"))
    lm_path = resolve_lm_path(source)
    if "vision_config" in model_cfg:
        vision: Any = CosmoConfig(vision_config=model_cfg.pop("vision_config")).vision_config
    else:
        vision = model_cfg.pop("vision_name_or_path")
    settings = {k: v for k, v in asdict(method).items() if v is not None}
    model = CosmoForCausalLM.from_parts(
        lm_path, vision, AutoTokenizer.from_pretrained(lm_path), **model_cfg, **settings
    )
    if source == "smollm2":
        model.card_info.base_model = "HuggingFaceTB/SmolLM2-135M-Instruct"
    return model


def run_cosmo_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """Train a COSMO model as the recipe says, evaluate it before and after, save it to `output_dir/final`.

    Args:
        recipe (`dict`):
            The resolved recipe (see the module docstring for its sections).

    Returns:
        `dict`: `train_rows`, `eval_images`, `before` / `after` (see [`evaluate_cosmo`]), `cross_attention_layers`,
        `output` (the saved model's folder) and `is_main_process`.
    """
    model_cfg = dict(recipe.get("model") or {})
    data_cfg = dict(recipe.get("data") or {})
    method = read_method(CosmoMethod, recipe.get("method"), task="cosmo")
    args = build_args(
        CosmoTrainingArguments,
        recipe.get("args"),
        defaults={"output_dir": "hf-contrastive-output/cosmo-coco-mini", "report_to": "none"},
    )
    if args.contrastive_weight is not None:
        raise RecipeError(
            "Set the loss weight in the method section (method.contrastive_weight), not in args."
        )
    root = Path(data_cfg.get("root") or coco_mini_dir())
    model = _build_model(model_cfg, method)
    train = coco_caption_rows(data_cfg.get("train_split", "train"), root=root)
    evaluation = load_coco_captions(data_cfg.get("eval_split", "val"), root=root)
    if data_cfg.get("max_eval_images") is not None:
        evaluation = evaluation.select(range(min(int(data_cfg["max_eval_images"]), len(evaluation))))
    ev = {
        "max_length": args.max_length,
        "ppl_captions": int(data_cfg.get("ppl_captions", 5)),
        "batch_size": int(data_cfg.get("eval_batch_size", 32)),
    }
    results: dict[str, Any] = {
        "train_rows": len(train),
        "eval_images": len(evaluation),
        "cross_attention_layers": model.config.cross_attention_layers,
        "before": evaluate_cosmo(model, evaluation, **ev),
    }
    trainer = CosmoTrainer(
        model=model, args=args, train_dataset=train, peft_config=lora_config(recipe.get("lora"))
    )
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trained = trainer.cosmo_model()
    results["after"] = evaluate_cosmo(trained, evaluation, **ev)
    name = str(data_cfg.get("dataset_name") or root.name)
    if data_cfg.get("dataset_name"):
        trained.card_info.datasets = [name]
    split = str(data_cfg.get("eval_split", "val"))
    for metric, key in (
        ("perplexity", "perplexity"),
        ("recall@1", "image_to_text_recall@1"),
        ("recall@5", "image_to_text_recall@5"),
    ):
        trained.card_info.add_result(
            EvalEntry(
                task_type="image-text-to-text" if metric == "perplexity" else "image-text-retrieval",
                dataset_name=name,
                dataset_type=name,
                dataset_split=split,
                metric_type=metric,
                metric_value=float(results["after"][key]),
                metric_name="caption perplexity" if metric == "perplexity" else f"image-to-text {metric}",
            )
        )
    final = Path(args.output_dir) / "final"
    trainer.save_cosmo(final)
    results["output"] = str(final.resolve())
    results["is_main_process"] = bool(args.should_save)
    return results


RECIPE_TASK = RecipeTask(
    name="cosmo",
    runner=run_cosmo_recipe,
    method=CosmoMethod,
    description="COSMO: LM + image-text contrastive training of a causal LM with gated cross-attention",
    model_schema=MODEL_SCHEMA,
    data_schema=DATA_SCHEMA,
    args_classes=(CosmoTrainingArguments,),
)
