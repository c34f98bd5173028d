"""Recipe task `relation`: TKRE pretraining of an encoder, or fine-tuning a relation classifier.

A recipe with `task: relation` runs TKRE's two pretraining stages when its `data` section names
`stage1` / `stage2` sources (`trainers/tkre-pretrain.yaml`), and fine-tunes a [`RelationClassifier`]
when it names `train` (`trainers/re-finetune.yaml`)::

    model:  {name_or_path: ${minilm}, marker_scheme: typed_entity_marker, no_relation_label: Other}
    data:   {stage1: SOURCE, stage1_unlabelled: SOURCE, stage2: SOURCE, relations: [...]}  # pretraining, or
            {train: SOURCE, eval: SOURCE, dataset_name: semeval2010_task8}   # fine-tuning
    method: RelationMethod fields (TKRE's settings; label_smoothing when fine-tuning)
    args:   TrainingArguments fields (TKREConfig / RelationFinetuneConfig)
    lora:   optional peft.LoraConfig fields

A SOURCE is read by [`load_relation_source`].
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hf_contrastive.core.hub.card import EvalEntry
from hf_contrastive.core.recipes import (
    RecipeError,
    RecipeTask,
    build_args,
    lora_config,
    read_method,
    schema_of,
)
from hf_contrastive.relation.configuration import RelationClassifierConfig
from hf_contrastive.relation.data import (
    SEMEVAL_LABELS,
    RelationExample,
    load_fewrel,
    load_semeval2010,
    load_unlabelled_relation_text,
    sample_k_shot,
)
from hf_contrastive.relation.modeling import RelationClassifier
from hf_contrastive.relation.scoring import relation_scores
from hf_contrastive.relation.tkre import (
    RelationClassificationTrainer,
    RelationFinetuneConfig,
    TKREConfig,
    TKREPretrainer,
)

__all__ = [
    "RECIPE_TASK",
    "RelationMethod",
    "load_relation_source",
    "run_re_finetune_recipe",
    "run_relation_recipe",
    "run_tkre_pretrain_recipe",
]


@dataclass
class RelationMethod:
    r"""The `method` section of `relation` recipes: TKRE's settings (2025), and fine-tuning's one.

    The TKRE settings are the [`TKREConfig`] fields of the same name and apply to pretraining only;
    `label_smoothing` is the [`RelationFinetuneConfig`] field and applies to fine-tuning only.

    Args:
        stage1_epochs (`float`, *optional*, defaults to 3.0):
            Epochs of stage 1 (masked span LM alone); 0 skips the stage.
        stage2_epochs (`float`, *optional*, defaults to 3.0):
            Epochs of stage 2 (masked span LM + span-level contrastive learning); 0 skips the stage.
        p_between (`float`, *optional*, defaults to 0.8):
            Masking probability of the tokens between the two entities.
        p_entity (`float`, *optional*, defaults to 0.5):
            Masking probability of entity tokens.
        p_other (`float`, *optional*, defaults to 0.2):
            Masking probability of the other tokens.
        mask_replace_prob (`float`, *optional*, defaults to 0.8):
            Share of selected tokens replaced by the mask token (BERT's 80/10/10).
        random_replace_prob (`float`, *optional*, defaults to 0.1):
            Share of selected tokens replaced by a random token.
        mlm_weight (`float`, *optional*, defaults to 1.0):
            l1, the weight of the masked LM loss.
        scl_weight (`float`, *optional*, defaults to 1.0):
            l2, the weight of the span-level contrastive loss.
        scl_temperature (`float`, *optional*, defaults to 0.1):
            Temperature of the span-level contrastive loss.
        anchor_negatives (`bool`, *optional*, defaults to `False`):
            Add the other relations' anchors to the contrastive denominator.
        projection_dim (`int`, *optional*, defaults to 128):
            Output size of the 2-layer span projection.
        negative_span_max (`int`, *optional*, defaults to 3):
            Longest negative span (tokens).
        marker_scheme (`str`, *optional*, defaults to `"typed_entity_marker"`):
            Entity markers added to the tokenizer (as the classifier's config).
        entity_types (`list[str]`, *optional*, defaults to `[]`):
            Entity types with their own markers.
        default_entity_type (`str`, *optional*, defaults to `"ENTITY"`):
            Type of untyped entities.
        max_seq_length (`int`, *optional*, defaults to 128):
            Token budget per example.
        with_explanations (`bool`, *optional*, defaults to `True`):
            Append an example's LLM explanation as a second segment.
        mlm_head_warmup_steps (`int`, *optional*, defaults to 100):
            Steps that train the masked-LM head alone (encoder frozen) before stage 1; 0 skips them.
        mlm_head_warmup_learning_rate (`float`, *optional*, defaults to 1e-3):
            Learning rate of the head warm-up.
        encoder_learning_rate (`float`, *optional*):
            Learning rate of the encoder in both stages (`None`: `args.learning_rate`).
        freeze_layers (`int`, *optional*, defaults to 0):
            Freeze the embeddings and this many lowest layers in both stages.
        label_smoothing (`float`, *optional*, defaults to 0.0):
            Fine-tuning: label smoothing of the cross-entropy.
    """

    stage1_epochs: float = 3.0
    stage2_epochs: float = 3.0
    p_between: float = 0.8
    p_entity: float = 0.5
    p_other: float = 0.2
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    mlm_weight: float = 1.0
    scl_weight: float = 1.0
    scl_temperature: float = 0.1
    anchor_negatives: bool = False
    projection_dim: int = 128
    negative_span_max: int = 3
    marker_scheme: str = "typed_entity_marker"
    entity_types: list[str] = field(default_factory=list)
    default_entity_type: str = "ENTITY"
    max_seq_length: int = 128
    with_explanations: bool = True
    mlm_head_warmup_steps: int = 100
    mlm_head_warmup_learning_rate: float = 1e-3
    encoder_learning_rate: float | None = None
    freeze_layers: int = 0
    label_smoothing: float = 0.0


FINETUNING_SETTINGS = ("label_smoothing",)
"""The `RelationMethod` settings of fine-tuning; all others are TKRE pretraining's."""

MODEL_SCHEMA: dict[str, Any] = {
    "name_or_path": str,
    "labels": list[str],
    **schema_of(RelationClassifierConfig.__init__, skip=("backbone_config", "marker_token_ids")),
}
"""The `model` keys of `relation` recipes: the encoder, the labels and [`RelationClassifierConfig`] settings
(fine-tuning; TKRE pretraining reads `name_or_path` only)."""

DATA_SCHEMA: dict[str, Any] = {
    "stage1": dict[str, Any],
    "stage2": dict[str, Any],
    "stage1_unlabelled": dict[str, Any],
    "relations": list[str],
    "train": dict[str, Any],
    "eval": dict[str, Any],
    "dataset_name": str,
}
"""The `data` keys of `relation` recipes: `stage1` / `stage1_unlabelled` (appended to stage 1) / `stage2` /
`relations` (pretraining) or `train` / `eval` / `dataset_name` (fine-tuning); each source is read by
[`load_relation_source`]."""


def load_relation_source(spec: dict[str, Any]) -> list:
    """Examples named by a recipe's data entry.

    Args:
        spec (`dict`):
            `{dataset: semeval2010, split: train|test, path: ..., k: 16, seed: 0, limit: N}`,
            `{dataset: fewrel, name: val_wiki, path: ...}`, `{dataset: jsonl, path: file}` (one
            `RelationExample` dict a line) or `{dataset: unlabelled, source: semeval2010|fewrel|text, path:
            ..., limit: N, seed: 0}` (relation-bearing sentences without labels, read by
            [`load_unlabelled_relation_text`]). `k` samples K per label with `seed`; `limit` keeps the first N.

    Returns:
        `list[RelationExample]`.
    """
    if not isinstance(spec, dict) or "dataset" not in spec:
        raise ValueError(f"A relation data entry is a mapping with a 'dataset' key, got {spec!r}.")
    kind = spec["dataset"]
    if kind == "unlabelled":
        if "source" not in spec:
            raise ValueError("An unlabelled relation data entry needs source: semeval2010, fewrel or text.")
        limit = spec.get("limit")
        return load_unlabelled_relation_text(
            spec["source"],
            path=spec.get("path"),
            limit=int(limit) if limit else None,
            seed=int(spec.get("seed", 0)),
        )
    if kind == "semeval2010":
        examples = load_semeval2010(spec.get("split", "train"), path=spec.get("path"))
        labels = SEMEVAL_LABELS
    elif kind == "fewrel":
        data = load_fewrel(spec.get("name", "val_wiki"), path=spec.get("path"))
        examples = [e for rows in data.values() for e in rows]
        labels = sorted(data)
    elif kind == "jsonl":
        path = Path(spec["path"])
        examples = [
            RelationExample.from_dict(json.loads(x)) for x in path.read_text().splitlines() if x.strip()
        ]
        labels = None
    else:
        raise ValueError(
            f"Unknown relation dataset {kind!r}; expected semeval2010, fewrel, jsonl or unlabelled."
        )
    if spec.get("k"):
        examples = sample_k_shot(examples, int(spec["k"]), seed=int(spec.get("seed", 0)), labels=labels)
    if spec.get("limit"):
        examples = examples[: int(spec["limit"])]
    return examples


def _refuse_settings(recipe: dict[str, Any], names: set[str], stage: str) -> None:
    given = sorted(set(recipe.get("method") or {}) & names)
    if given:
        raise ValueError(f"Method setting(s) {given} do not apply to {stage}.")


def run_relation_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """The `relation` recipe task: TKRE pretraining when the data section names `stage1` /
    `stage2` sources, classifier fine-tuning when it names `train`.

    Args:
        recipe (`dict`):
            The resolved recipe (see the module docstring).
    """
    data_cfg = recipe.get("data") or {}
    pretraining = "stage1" in data_cfg or "stage2" in data_cfg
    if pretraining and "train" in data_cfg:
        raise ValueError(
            "A relation recipe's data section has either stage1/stage2 (pretraining) or train (fine-tuning), not both."
        )
    return run_tkre_pretrain_recipe(recipe) if pretraining else run_re_finetune_recipe(recipe)


def run_tkre_pretrain_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """TKRE stages 1 and 2 as a recipe says; saves the encoder to `<output_dir>/encoder`.

    Args:
        recipe (`dict`):
            The resolved recipe, with `data.stage1` and/or `data.stage2` sources.

    Returns:
        `dict`: `train_loss`, the stages' figures and `output`.
    """
    model_cfg = dict(recipe.get("model") or {})
    data_cfg = dict(recipe.get("data") or {})
    if "name_or_path" not in model_cfg:
        raise ValueError("The recipe's model section needs name_or_path.")
    if "stage1" not in data_cfg and "stage2" not in data_cfg:
        raise ValueError("The recipe's data section needs stage1 and/or stage2 sources.")
    _refuse_settings(recipe, set(FINETUNING_SETTINGS), "TKRE pretraining (data.stage1 / data.stage2)")
    extra = sorted(set(model_cfg) - {"name_or_path"})
    if extra:
        raise RecipeError(
            f"model setting(s) {extra} do not apply to TKRE pretraining (data.stage1 / data.stage2): it reads "
            "model.name_or_path only; marker settings are method settings."
        )
    method = read_method(RelationMethod, recipe.get("method"), task="relation")
    args = build_args(
        TKREConfig, recipe.get("args"), method=method, defaults={"output_dir": "hf-contrastive-output"}
    )
    stage1 = load_relation_source(data_cfg["stage1"]) if data_cfg.get("stage1") else None
    if data_cfg.get("stage1_unlabelled"):
        stage1 = (stage1 or []) + load_relation_source(data_cfg["stage1_unlabelled"])
    stage2 = load_relation_source(data_cfg["stage2"]) if data_cfg.get("stage2") else None
    relations = data_cfg.get("relations")
    if relations is None and data_cfg.get("stage2", {}).get("dataset") == "semeval2010":
        relations = list(SEMEVAL_LABELS)
    trainer = TKREPretrainer(
        model=model_cfg["name_or_path"],
        args=args,
        stage1_dataset=stage1,
        stage2_dataset=stage2,
        relations=relations,
        peft_config=lora_config(recipe.get("lora")),
    )
    out = trainer.train()
    target = Path(args.output_dir) / "encoder"
    if args.should_save:
        trainer.save_encoder(target)
    return {"train_loss": out.training_loss, **out.metrics, "output": str(target.resolve())}


def run_re_finetune_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """Fine-tune a `RelationClassifier` as a recipe says, evaluate, save to `<output_dir>/final`.

    Args:
        recipe (`dict`):
            The resolved recipe, with a `data.train` source (and optionally `data.eval`).

    Returns:
        `dict`: `train_loss`, `eval_*` figures (with `data.eval`) and `output`.
    """
    model_cfg = dict(recipe.get("model") or {})
    data_cfg = dict(recipe.get("data") or {})
    if "name_or_path" not in model_cfg:
        raise ValueError("The recipe's model section needs name_or_path.")
    if "train" not in data_cfg:
        raise ValueError("The recipe's data section needs a train source.")
    pretraining_only = {
        name for name in RelationMethod.__dataclass_fields__ if name not in FINETUNING_SETTINGS
    }
    _refuse_settings(recipe, pretraining_only, "fine-tuning (data.train); they are TKRE pretraining's")
    method = read_method(RelationMethod, recipe.get("method"), task="relation")
    args = build_args(
        RelationFinetuneConfig,
        recipe.get("args"),
        method=method,
        defaults={"output_dir": "hf-contrastive-output"},
    )
    train = load_relation_source(data_cfg["train"])
    labels = model_cfg.pop("labels", None)
    if labels is None:
        labels = (
            list(SEMEVAL_LABELS)
            if data_cfg["train"].get("dataset") == "semeval2010"
            else sorted({e.label for e in train})
        )
    torch.manual_seed(args.seed)
    model = RelationClassifier.from_pretrained(model_cfg.pop("name_or_path"), labels=labels, **model_cfg)
    trainer = RelationClassificationTrainer(
        model=model, args=args, train_dataset=train, peft_config=lora_config(recipe.get("lora"))
    )
    out = trainer.train()
    model = trainer.classifier()
    results: dict[str, Any] = {"train_loss": out.training_loss}
    if data_cfg.get("eval"):
        test = load_relation_source(data_cfg["eval"])
        pred = model.predict(test, batch_size=args.per_device_eval_batch_size)
        scores = relation_scores([e.label for e in test], pred, model.config.no_relation_label)
        results.update({f"eval_{k}": v for k, v in scores.items()})
        name = data_cfg.get("dataset_name") or data_cfg["eval"].get("dataset", "relation")
        for metric, value in scores.items():
            if metric in ("official_macro_f1", "micro_f1"):
                model.card_info.add_result(
                    EvalEntry(
                        "text-classification",
                        name,
                        name,
                        metric,
                        value,
                        dataset_split=data_cfg["eval"].get("split"),
                    )
                )
    model.card_info.training = {
        "objective": "cross-entropy over subject/object start-marker states",
        "train examples": len(train),
        "epochs": args.num_train_epochs,
        "learning rate": args.learning_rate,
    }
    final = Path(args.output_dir) / "final"
    if args.should_save:
        model.save_pretrained(final)
    results["output"] = str(final.resolve())
    return results


RECIPE_TASK = RecipeTask(
    name="relation",
    runner=run_relation_recipe,
    method=RelationMethod,
    legacy_sections=("tkre",),
    description="TKRE two-stage pretraining (data.stage1/stage2) or relation-classifier fine-tuning (data.train)",
    model_schema=MODEL_SCHEMA,
    data_schema=DATA_SCHEMA,
    args_classes=(TKREConfig, RelationFinetuneConfig),
)
