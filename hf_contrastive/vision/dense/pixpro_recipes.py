"""Recipe task `pixpro`: train a vision backbone with PixPro on unlabelled images, report the dense
correspondence score before and after, save the encoder with its card.

A recipe with `task: pixpro` has these sections::

    model:  {backbone_config: {model_type: convnext, ...}}   # from scratch; or name_or_path: a vision backbone
            + PixProConfig head settings (projector_hidden_size, projection_dim, image_size, crop_scale, ...)
    data:   {train: SOURCE, eval: SOURCE, dataset_name: ..., eval_view_pairs: 2, eval_seed: 0}
    method: {pixpro_weight: 1.0, ppm_gamma: 2.0, momentum_base: 0.99, ...}   # PixProMethod
    args:   PixProTrainingArguments fields

A SOURCE is `{type: coco, split: train, root: ...}` (the images of a COCO caption split, coco-mini by default)
or `{type: folder, path: ...}` (every image file under a folder). With `data.eval`, the dense correspondence
score ([`dense_correspondence_score`] on the backbone's feature map, same views for both measurements) is
measured before and after training, next to its chance rate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset

from hf_contrastive.core.hub.card import EvalEntry
from hf_contrastive.core.recipes import (
    BACKBONE_LOAD_OPTIONS,
    RecipeError,
    RecipeTask,
    build_args,
    read_method,
    schema_of,
)
from hf_contrastive.vision.data import load_coco_captions
from hf_contrastive.vision.dense.features import DEFAULT_POSITIVE_THRESHOLD, dense_correspondence_score
from hf_contrastive.vision.dense.pixpro import (
    PixProConfig,
    PixProModel,
    PixProTrainer,
    PixProTrainingArguments,
)

__all__ = [
    "DATA_SCHEMA",
    "IMAGE_SUFFIXES",
    "MODEL_SCHEMA",
    "PIXPRO_TASK",
    "PixProMethod",
    "load_images",
    "run_pixpro_recipe",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
"""File suffixes read as images by a `folder` source."""


@dataclass
class PixProMethod:
    r"""The `method` section of `pixpro` recipes: the objective's settings, defaults from the paper (Xie et al. 2021).
    Each is the [`PixProConfig`] field of the same name.

    Args:
        pixpro_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the pixel-to-propagation consistency loss.
        pixcontrast_weight (`float`, *optional*, defaults to `0.0`):
            Weight of PixContrast (pixel-level InfoNCE).
        pixcontrast_temperature (`float`, *optional*, defaults to `0.3`):
            PixContrast's temperature (unverified).
        instance_weight (`float`, *optional*, defaults to `0.0`):
            Weight of the BYOL-style instance branch.
        ppm_gamma (`float`, *optional*, defaults to `2.0`):
            Sharpness of the propagation similarity.
        ppm_transform_layers (`int`, *optional*, defaults to `1`):
            Layers of the propagation's value transform (0, 1 or 2).
        momentum_base (`float`, *optional*, defaults to `0.99`):
            Start of the cosine momentum schedule (rising to 1).
        positive_threshold (`float`, *optional*, defaults to `0.7`):
            Positive-pair threshold on the centre distance over the larger bin diagonal.
    """

    pixpro_weight: float = 1.0
    pixcontrast_weight: float = 0.0
    pixcontrast_temperature: float = 0.3
    instance_weight: float = 0.0
    ppm_gamma: float = 2.0
    ppm_transform_layers: int = 1
    momentum_base: float = 0.99
    positive_threshold: float = DEFAULT_POSITIVE_THRESHOLD


_METHOD_FIELDS = tuple(PixProMethod.__dataclass_fields__)

MODEL_SCHEMA: dict[str, Any] = {
    "name_or_path": str,
    "backbone_config": dict[str, Any],
    **schema_of(PixProConfig.__init__, skip=("backbone_config", *_METHOD_FIELDS)),
    **BACKBONE_LOAD_OPTIONS,
}
"""The `model` keys of `pixpro` recipes: a backbone folder or Hub id (`name_or_path`) or a backbone config to train
from scratch (`backbone_config`, with `model_type`), [`PixProConfig`] head settings and the backbone's loading
options."""

DATA_SCHEMA: dict[str, Any] = {
    "train": dict[str, Any],
    "eval": dict[str, Any],
    "dataset_name": str,
    "eval_view_pairs": int,
    "eval_seed": int,
}
"""The `data` keys of `pixpro` recipes: training and evaluation sources, the data set's name for the card, and the
dense evaluation's view pairs per image and seed."""


def load_images(source: dict[str, Any]) -> Dataset:
    """Rows with an `image` column (file paths) from a recipe source.

    Args:
        source (`dict`): `{type: coco, split: train|val, root: ...}` or `{type: folder, path: ...}`.

    Raises:
        `RecipeError`: for an unknown type, a missing folder or a folder without images.
    """
    kind = source.get("type")
    if kind == "coco":
        rows = load_coco_captions(str(source.get("split", "train")), source.get("root"))
        return Dataset.from_dict({"image": list(rows["image"])})
    if kind == "folder":
        if "path" not in source:
            raise RecipeError("A folder source needs a path.")
        folder = Path(source["path"])
        if not folder.is_dir():
            raise RecipeError(f"The image folder {folder} does not exist.")
        paths = sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise RecipeError(f"No image files ({', '.join(IMAGE_SUFFIXES)}) under {folder}.")
        return Dataset.from_dict({"image": paths})
    raise RecipeError(f"Unknown image source type {kind!r}; expected 'coco' or 'folder'.")


def _score(model: PixProModel, images: list[str], view_pairs: int, seed: int) -> dict[str, float]:
    return dense_correspondence_score(
        model.backbone,
        images,
        image_size=model.config.image_size,
        num_view_pairs=view_pairs,
        seed=seed,
        threshold=model.config.positive_threshold,
        mean=model.config.image_mean,
        std=model.config.image_std,
    )


def run_pixpro_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """Train a [`PixProModel`] as the recipe says, score its dense features, save it; return the figures.

    Args:
        recipe (`dict`):
            The resolved recipe (see the module docstring for its sections).

    Returns:
        `dict`: `train_rows`, and with `data.eval`: `eval_rows`, `before` / `after` (dense correspondence figures:
        `top1`, `chance`, `top1_within_image`, ...); `skipped_images` (training images whose crops shared no
        positive cell pair), `output` (the saved encoder's folder) and `is_main_process`.
    """
    model_cfg = dict(recipe.get("model") or {})
    data_cfg = dict(recipe.get("data") or {})
    if recipe.get("lora"):
        raise RecipeError("Task 'pixpro' trains its backbone in full; remove the lora section.")
    if ("name_or_path" in model_cfg) == ("backbone_config" in model_cfg):
        raise RecipeError(
            "The pixpro recipe's model section needs exactly one of name_or_path (a vision backbone) and "
            "backbone_config (a config with model_type, trained from scratch)."
        )
    if "train" not in data_cfg:
        raise RecipeError("The pixpro recipe's data section needs a train source.")
    method = read_method(PixProMethod, recipe.get("method"), task="pixpro")
    args = build_args(
        PixProTrainingArguments,
        recipe.get("args"),
        defaults={"output_dir": "hf-contrastive-output/pixpro", "report_to": "none"},
    )
    train = load_images(data_cfg["train"])
    evaluation = load_images(data_cfg["eval"]) if data_cfg.get("eval") else None
    view_pairs, seed = int(data_cfg.get("eval_view_pairs", 2)), int(data_cfg.get("eval_seed", 0))

    load_options = {k: model_cfg.pop(k) for k in list(model_cfg) if k in BACKBONE_LOAD_OPTIONS}
    if "backbone_config" in model_cfg:
        if load_options:
            raise RecipeError(
                f"Loading options {sorted(load_options)} need model.name_or_path, not backbone_config."
            )
        backbone: Any = PixProConfig(backbone_config=model_cfg.pop("backbone_config")).backbone_config
    else:
        backbone = model_cfg.pop("name_or_path")
    model = PixProModel.from_backbone(
        backbone, backbone_kwargs=load_options or None, **model_cfg, **asdict(method)
    )
    trainer = PixProTrainer(model=model, args=args, train_dataset=train)

    results: dict[str, Any] = {"train_rows": len(train)}
    if evaluation is not None:
        results["eval_rows"] = len(evaluation)
        results["before"] = _score(model, list(evaluation["image"]), view_pairs, seed)
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    results["skipped_images"] = trainer.skipped_images_total
    if evaluation is not None:
        results["after"] = _score(model, list(evaluation["image"]), view_pairs, seed)

    final = Path(args.output_dir) / "final"
    info = model.card_info
    if data_cfg.get("dataset_name"):
        info.datasets = [str(data_cfg["dataset_name"])]
    terms = [name for name in ("pixpro", "pixcontrast", "instance") if getattr(method, f"{name}_weight")]
    info.training = {
        "objective": "PixPro (" + " + ".join(terms) + ")",
        "max steps": args.max_steps,
        "epochs": args.num_train_epochs,
        "learning rate": args.learning_rate,
        "batch size (all processes)": args.per_device_train_batch_size * max(args.world_size, 1),
        "training images": len(train),
        "seed": args.seed,
    }
    if evaluation is not None:
        name = str(data_cfg.get("dataset_name") or data_cfg["eval"].get("type", "images"))
        info.eval_results = [
            EvalEntry(
                "image-feature-extraction",
                name,
                name,
                "accuracy",
                float(results["after"]["top1"]),
                dataset_split=data_cfg["eval"].get("split"),
                metric_name=f"dense correspondence top-1 (chance {results['after']['chance']:.4f})",
            )
        ]
    if args.should_save:
        trainer.save_model(str(final))
    results["output"] = str(final.resolve())
    results["is_main_process"] = bool(args.should_save)
    return results


PIXPRO_TASK = RecipeTask(
    name="pixpro",
    runner=run_pixpro_recipe,
    method=PixProMethod,
    description="PixPro pixel-level consistency training of a vision backbone, dense correspondence before/after",
    model_schema=MODEL_SCHEMA,
    data_schema=DATA_SCHEMA,
    args_classes=(PixProTrainingArguments,),
)
