"""Recipe task `hydra`: train a vision backbone with Hydra / SimLAP on labelled images, report the online linear
probe's accuracy, save the encoder with its card.

A recipe with `task: hydra` has these sections::

    model:  {backbone_config: {model_type: vit, ...}}   # from scratch; or name_or_path: a vision backbone
            + HydraConfig head settings (pooling, feature_dim, projector_hidden_size, ...)
    data:   {train: SOURCE, eval: SOURCE, dataset_name: ...}
    method: {pair_type: arbitrary, logit_variant: gated_cosine, logit_temperature: 0.1, ...}   # HydraMethod
    args:   HydraTrainingArguments fields

A SOURCE is `{type: coco_keywords, split: train, root: ...}` (COCO captions with coarse classes derived from
the captions) or `{type: imagefolder, path: ...}` (one folder per class), read by `load_labelled_images`. The
classes are those of the training source; an evaluation source must have the same ones. With `data.eval`, the
probe's accuracy is measured before and after training, next to the majority-class rate (always predicting
the training set's most frequent class).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hf_contrastive.core.hub.card import EvalEntry
from hf_contrastive.core.recipes import (
    BACKBONE_LOAD_OPTIONS,
    RecipeError,
    RecipeTask,
    build_args,
    read_method,
    schema_of,
)
from hf_contrastive.vision.hydra import (
    HydraConfig,
    HydraModel,
    HydraTrainer,
    HydraTrainingArguments,
    load_labelled_images,
    majority_rate,
)

__all__ = ["DATA_SCHEMA", "HYDRA_TASK", "MODEL_SCHEMA", "HydraMethod", "run_hydra_recipe"]


@dataclass
class HydraMethod:
    r"""The `method` section of `hydra` recipes: the objective's settings, defaults from the Hydra / SimLAP code as
    the specification gives them (Wu et al. 2024). Each is the [`HydraConfig`] field of the same name.

    Args:
        pair_type (`str`, *optional*, defaults to `"arbitrary"`):
            How each anchor's target class is drawn: `arbitrary` (labels of a randomly permuted batch),
            `identical` (its own class) or `distinct` (another class).
        logit_variant (`str`, *optional*, defaults to `"gated_cosine"`):
            `gated_cosine` (cosine of gated features over `logit_temperature`) or `gated_scaled` (gated dot
            product times a learnable scale).
        logit_temperature (`float`, *optional*, defaults to `0.1`):
            Temperature of `gated_cosine`.
        logit_scale_init (`float`, *optional*, defaults to `log(10)`):
            Initial log-scale of `gated_scaled`.
        probe_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the online linear probe's cross-entropy.
    """

    pair_type: str = "arbitrary"
    logit_variant: str = "gated_cosine"
    logit_temperature: float = 0.1
    logit_scale_init: float = math.log(10.0)
    probe_weight: float = 1.0


_METHOD_FIELDS = tuple(HydraMethod.__dataclass_fields__)

MODEL_SCHEMA: dict[str, Any] = {
    "name_or_path": str,
    "backbone_config": dict[str, Any],
    **schema_of(HydraConfig.__init__, skip=("backbone_config", "labels", *_METHOD_FIELDS)),
    **BACKBONE_LOAD_OPTIONS,
}
"""The `model` keys of `hydra` recipes: a backbone folder or Hub id (`name_or_path`) or a backbone config to train
from scratch (`backbone_config`, with `model_type`), [`HydraConfig`] head settings and the backbone's loading
options."""

DATA_SCHEMA: dict[str, Any] = {
    "train": dict[str, Any],
    "eval": dict[str, Any],
    "dataset_name": str,
}
"""The `data` keys of `hydra` recipes: the training and evaluation sources and the data set's name for the card."""


def _class_names(dataset: Any, where: str) -> list[str]:
    feature = dataset.features.get("label") if hasattr(dataset, "features") else None
    names = getattr(feature, "names", None)
    if not names:
        raise RecipeError(f"The {where} source gives no class names (a 'label' column of class names).")
    return list(names)


def run_hydra_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """Train a [`HydraModel`] as the recipe says, evaluate its probe, save it; return the figures.

    Args:
        recipe (`dict`):
            The resolved recipe (see the module docstring for its sections).

    Returns:
        `dict`: `classes`, `train_rows`, and with `data.eval`: `eval_rows`, `before` / `after` (evaluation
        figures, `eval_probe_accuracy` among them) and `majority_rate`; `output` (the saved encoder's folder)
        and `is_main_process`.
    """
    model_cfg = dict(recipe.get("model") or {})
    data_cfg = dict(recipe.get("data") or {})
    if recipe.get("lora"):
        raise RecipeError("Task 'hydra' trains its backbone in full; remove the lora section.")
    if ("name_or_path" in model_cfg) == ("backbone_config" in model_cfg):
        raise RecipeError(
            "The hydra recipe's model section needs exactly one of name_or_path (a vision backbone) and "
            "backbone_config (a config with model_type, trained from scratch)."
        )
    if "train" not in data_cfg:
        raise RecipeError("The hydra recipe's data section needs a train source.")
    method = read_method(HydraMethod, recipe.get("method"), task="hydra")
    args = build_args(
        HydraTrainingArguments,
        recipe.get("args"),
        defaults={"output_dir": "hf-contrastive-output/hydra", "report_to": "none"},
    )

    train = load_labelled_images(data_cfg["train"])
    names = _class_names(train, "train")
    evaluation = load_labelled_images(data_cfg["eval"]) if data_cfg.get("eval") else None
    if evaluation is not None and _class_names(evaluation, "eval") != names:
        raise RecipeError(
            f"The eval source's classes {_class_names(evaluation, 'eval')} differ from the train source's {names}."
        )

    load_options = {k: model_cfg.pop(k) for k in list(model_cfg) if k in BACKBONE_LOAD_OPTIONS}
    if "backbone_config" in model_cfg:
        if load_options:
            raise RecipeError(
                f"Loading options {sorted(load_options)} need model.name_or_path, not backbone_config."
            )
        backbone: Any = HydraConfig(backbone_config=model_cfg.pop("backbone_config")).backbone_config
    else:
        backbone = model_cfg.pop("name_or_path")
    model = HydraModel.from_backbone(
        backbone, labels=names, backbone_kwargs=load_options or None, **model_cfg, **asdict(method)
    )
    trainer = HydraTrainer(model=model, args=args, train_dataset=train, eval_dataset=evaluation)

    results: dict[str, Any] = {"classes": names, "train_rows": len(train)}
    if evaluation is not None:
        results["eval_rows"] = len(evaluation)
        results["majority_rate"] = majority_rate(train["label"], evaluation["label"])
        results["before"] = trainer.evaluate()
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    if evaluation is not None:
        results["after"] = trainer.evaluate()

    final = Path(args.output_dir) / "final"
    info = model.card_info
    if data_cfg.get("dataset_name"):
        info.datasets = [str(data_cfg["dataset_name"])]
    info.training = {
        "objective": f"Hydra / SimLAP, {method.pair_type} class pairs, {method.logit_variant} logits",
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
                "image-classification",
                name,
                name,
                "accuracy",
                float(results["after"]["eval_probe_accuracy"]),
                dataset_split=data_cfg["eval"].get("split"),
                metric_name="online linear probe accuracy",
            )
        ]
    if args.should_save:
        trainer.save_model(str(final))
    results["output"] = str(final.resolve())
    results["is_main_process"] = bool(args.should_save)
    return results


HYDRA_TASK = RecipeTask(
    name="hydra",
    runner=run_hydra_recipe,
    method=HydraMethod,
    description="Hydra / SimLAP arbitrary-pair contrastive training of a vision backbone, online probe accuracy",
    model_schema=MODEL_SCHEMA,
    data_schema=DATA_SCHEMA,
    args_classes=(HydraTrainingArguments,),
)
