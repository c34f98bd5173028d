"""Recipe task `dito`: train a DITO dual encoder (region-level + image-level CLIP losses, shifted windows) on COCO-style
captions, report image-text recall before and after, save the model with its card.

A recipe with `task: dito` has these sections::

    model:  {vision_config: {model_type: vitdet, ...}}        # from scratch; or vision_name_or_path: a folder
            {text_name_or_path: ${minilm}}                    # or text_config (+ tokenizer: a folder)
            + DITOConfig head settings (projection_dim, fpn_dim, roi_output_size, ...)
            + freeze_text_model: true                         # train only the text projection on that side
    data:   {train: {split: train, root: ...}, eval: {split: val, root: ...}, dataset_name: ...}
    method: {shifted_window: true, box_sampling: per_level, num_random_boxes: 1, ...}   # DITOMethod
    args:   DITOTrainingArguments fields

A data source is a COCO caption folder read by `hf_contrastive.vision.data.load_coco_captions` (`root` defaults
to the shared coco-mini copy). With `data.eval`, recall@1/5/10 both ways is measured before and after training
(every caption of every evaluation image, the COCO protocol).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from hf_contrastive.core.hub.card import EvalEntry
from hf_contrastive.core.recipes import RecipeError, RecipeTask, build_args, read_method, schema_of
from hf_contrastive.vision.data import load_coco_captions
from hf_contrastive.vision.dense.dito import (
    DITOConfig,
    DITOModel,
    DITOTrainer,
    DITOTrainingArguments,
    dito_retrieval_metrics,
)

__all__ = ["DATA_SCHEMA", "DITO_TASK", "DITOMethod", "MODEL_SCHEMA", "run_dito_recipe"]


@dataclass
class DITOMethod:
    r"""The `method` section of `dito` recipes: the objective's settings. Each is the [`DITOConfig`] field of the same
    name; defaults are the library's reading of DITO (Kim et al. 2023), see `hf_contrastive.vision.dense.dito`.

    Args:
        shifted_window (`bool`, *optional*, defaults to `True`):
            Run the window-attention blocks a second time on the grid rolled by half a window, roll back, average.
        box_sampling (`str`, *optional*, defaults to `"per_level"`):
            `per_level` (whole-image box + random boxes on every pyramid level) or `assigned` (whole-image box +
            random boxes, each at its FPN level).
        num_random_boxes (`int`, *optional*, defaults to `1`):
            Random boxes per image (per level with `per_level`).
        random_box_min_size (`float`, *optional*, defaults to `0.25`):
            Smallest side of a random box, as a share of the image side.
        random_box_max_size (`float`, *optional*, defaults to `1.0`):
            Largest side of a random box, likewise.
        image_loss_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the image-level CLIP term.
        region_loss_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the mean region CLIP term (`0`: image-level CLIP only).
    """

    shifted_window: bool = True
    box_sampling: str = "per_level"
    num_random_boxes: int = 1
    random_box_min_size: float = 0.25
    random_box_max_size: float = 1.0
    image_loss_weight: float = 1.0
    region_loss_weight: float = 1.0


_METHOD_FIELDS = tuple(DITOMethod.__dataclass_fields__)

MODEL_SCHEMA: dict[str, Any] = {
    "vision_name_or_path": str,
    "vision_config": dict[str, Any],
    "text_name_or_path": str,
    "text_config": dict[str, Any],
    "tokenizer": str,
    "freeze_text_model": bool,
    **schema_of(DITOConfig.__init__, skip=("vision_config", "text_config", *_METHOD_FIELDS)),
}
"""The `model` keys of `dito` recipes: each tower as a folder (`*_name_or_path`) or a config to train from scratch
(`*_config`, with `model_type`), the tokenizer folder (default: the text tower's), `freeze_text_model`, and
[`DITOConfig`] head settings."""

DATA_SCHEMA: dict[str, Any] = {"train": dict[str, Any], "eval": dict[str, Any], "dataset_name": str}
"""The `data` keys of `dito` recipes: the training and evaluation caption sources and the data set's name."""


def _source(cfg: dict[str, Any], where: str) -> Any:
    unknown = sorted(set(cfg) - {"split", "root"})
    if unknown:
        raise RecipeError(f"data.{where} takes split and root (a COCO caption folder), got also {unknown}.")
    return load_coco_captions(cfg.get("split", "train" if where == "train" else "val"), root=cfg.get("root"))


def _tower(model_cfg: dict[str, Any], side: str) -> Any:
    path, config = f"{side}_name_or_path", f"{side}_config"
    if (path in model_cfg) == (config in model_cfg):
        raise RecipeError(
            f"The dito recipe's model section needs exactly one of {path} (a folder or Hub id) and {config} (a "
            "config with model_type, trained from scratch)."
        )
    if path in model_cfg:
        return model_cfg.pop(path)
    key = "vision_config" if side == "vision" else "text_config"
    return getattr(DITOConfig(**{key: model_cfg.pop(config)}, shifted_window=False), key)


def run_dito_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """Train a [`DITOModel`] as the recipe says, measure retrieval before and after, save it; return the figures.

    Args:
        recipe (`dict`):
            The resolved recipe (see the module docstring for its sections).

    Returns:
        `dict`: `train_rows`; with `data.eval`: `eval_rows`, `before` / `after` (recall@K both ways, in %);
        `output` (the saved model's folder) and `is_main_process`.
    """
    model_cfg = dict(recipe.get("model") or {})
    data_cfg = dict(recipe.get("data") or {})
    if recipe.get("lora"):
        raise RecipeError("Task 'dito' trains its towers in full; remove the lora section.")
    if "train" not in data_cfg:
        raise RecipeError("The dito recipe's data section needs a train source.")
    method = read_method(DITOMethod, recipe.get("method"), task="dito")
    args = build_args(
        DITOTrainingArguments,
        recipe.get("args"),
        defaults={"output_dir": "hf-contrastive-output/dito", "report_to": "none"},
    )
    vision = _tower(model_cfg, "vision")
    text = _tower(model_cfg, "text")
    tokenizer_path = model_cfg.pop("tokenizer", None) or (text if isinstance(text, str) else None)
    if tokenizer_path is None:
        raise RecipeError("A text tower built from text_config needs model.tokenizer (a tokenizer folder).")
    freeze_text = bool(model_cfg.pop("freeze_text_model", False))
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    train = _source(dict(data_cfg["train"]), "train")
    evaluation = _source(dict(data_cfg["eval"]), "eval") if data_cfg.get("eval") else None

    model = DITOModel.from_towers(vision, text, **model_cfg, **asdict(method))
    model.tokenizer = tokenizer
    if freeze_text:
        model.text_model.requires_grad_(False)
    trainer = DITOTrainer(
        model=model, args=args, train_dataset=train, eval_dataset=evaluation, processing_class=tokenizer
    )
    batch = args.per_device_eval_batch_size
    results: dict[str, Any] = {"train_rows": len(train)}
    if evaluation is not None:
        results["eval_rows"] = len(evaluation)
        results["before"] = dito_retrieval_metrics(model, evaluation, tokenizer, batch_size=batch)
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    if evaluation is not None:
        results["after"] = dito_retrieval_metrics(model, evaluation, tokenizer, batch_size=batch)

    final = Path(args.output_dir) / "final"
    info = model.card_info
    name = str(data_cfg.get("dataset_name") or "coco captions")
    info.datasets = [name]
    objective = "DITO region + image CLIP" if method.region_loss_weight > 0 else "image-level CLIP"
    info.training = {
        "objective": objective + (", shifted windows" if method.shifted_window else ""),
        "box sampling": f"{method.box_sampling}, {method.num_random_boxes} random box(es)",
        "text tower": "frozen" if freeze_text else "trained",
        "length": f"{args.max_steps} steps" if args.max_steps > 0 else f"{args.num_train_epochs:g} epochs",
        "learning rate": args.learning_rate,
        "batch size (all processes)": args.per_device_train_batch_size * max(args.world_size, 1),
        "training images": len(train),
        "seed": args.seed,
    }
    if evaluation is not None:
        info.eval_results = [
            EvalEntry(
                "zero-shot-image-classification",
                name,
                name,
                "recall",
                float(results["after"][f"{way}_recall@1"]),
                dataset_split=data_cfg["eval"].get("split", "val"),
                metric_name=f"{way.replace('_', ' ')} recall@1",
            )
            for way in ("image_to_text", "text_to_image")
        ]
    if args.should_save:
        trainer.save_model(str(final))
    results["output"] = str(final.resolve())
    results["is_main_process"] = bool(args.should_save)
    return results


DITO_TASK = RecipeTask(
    name="dito",
    runner=run_dito_recipe,
    method=DITOMethod,
    description="DITO region-level image-text pretraining with shifted windows, recall@K before and after",
    model_schema=MODEL_SCHEMA,
    data_schema=DATA_SCHEMA,
    args_classes=(DITOTrainingArguments,),
)
