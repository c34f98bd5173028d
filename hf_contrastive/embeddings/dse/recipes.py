"""Recipe task `dse`: distil a cross-encoder teacher into a siamese pair scorer, evaluate both, save the student.

A recipe with `task: dse` has these sections::

    model:  {name_or_path: ${minilm}, max_seq_length: 128}        # the student's encoder (from_backbone)
    data:   {train: {type: stsb, split: train, normalise: true},  # labelled pairs (load_source)
             train_rows: 2000,                                    # optional: a seeded random subset
             eval: {type: stsb, split: dev, normalise: true},     # scored by teacher and student
             teacher: path/to/cross-encoder}                      # optional, see below
    method: {distill_weight: 0.5, num_top_layers: 4, classifier_hidden_size: 512, task: regression}
    args:   {learning_rate: 5e-5, per_device_train_batch_size: 16, ...}   # DSETrainingArguments fields

The teacher is `data.teacher` (a sequence-classification folder, or a `CrossEncoderReranker` folder). Without
one, the recipe first fine-tunes a cross-encoder teacher (`AutoModelForSequenceClassification` on
`data.teacher_backbone`, by default the student's encoder) on the training pairs with the `teacher_*` method
settings, and saves it to `{output_dir}/teacher`. The teacher's logits for the training (and evaluation) pairs
are computed once into `data.teacher_cache_dir` (default `{output_dir}/teacher-cache`); rerunning the recipe
reads them back, and refuses them if the teacher or the data changed. `data.test`, when given, is scored once
at the end (choose the settings on `eval`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_contrastive.core.data.loaders import load_source
from hf_contrastive.core.hub.card import EvalEntry
from hf_contrastive.core.recipes import (
    BACKBONE_LOAD_OPTIONS,
    RecipeError,
    RecipeTask,
    build_args,
    read_method,
)
from hf_contrastive.embeddings.dse.cache import cached_teacher_logits
from hf_contrastive.embeddings.dse.configuration import DSE_TASKS
from hf_contrastive.embeddings.dse.modeling import DistilledPairScorer
from hf_contrastive.embeddings.dse.teacher import finetune_teacher, load_teacher, teacher_kind
from hf_contrastive.embeddings.dse.trainer import (
    DSETrainer,
    DSETrainingArguments,
    evaluate_pair_scores,
    resolve_label_column,
)

logger = logging.getLogger(__name__)

__all__ = ["DATA_SCHEMA", "DSEMethod", "MODEL_SCHEMA", "RECIPE_TASK", "run_dse_recipe"]

MODEL_SCHEMA: dict[str, Any] = {
    "name_or_path": str,
    "max_seq_length": int | None,
    "classifier_dropout": float,
    "num_labels": int,
    **BACKBONE_LOAD_OPTIONS,
}
"""The `model` keys of `dse` recipes: the student's encoder folder, the [`DSEConfig`] settings that are not the
method's, and the backbone's loading options."""

DATA_SCHEMA: dict[str, Any] = {
    "train": dict[str, Any],
    "train_rows": int,
    "eval": dict[str, Any],
    "test": dict[str, Any],
    "teacher": str,
    "teacher_backbone": str,
    "teacher_cache_dir": str,
    "dataset_name": str,
}
"""The `data` keys of `dse` recipes: the training, evaluation and test sources (read by `load_source`), how many
training pairs to keep (a random subset drawn with `args.seed`; all by default), the teacher folder (or the encoder a teacher is fine-tuned from), the folder of the teacher-logits caches and the
data set's Hub name for the model card."""


@dataclass
class DSEMethod:
    r"""The `method` section of `dse` recipes. DSE settings follow Barkan et al. (2019); the `teacher_*` settings
    are the recipe's own, used when it fine-tunes the teacher itself (no `data.teacher`).

    Args:
        distill_weight (`float`, *optional*, defaults to 0.5):
            `a` in `(1 - a) * task_loss + a * sum (student - teacher)^2`.
        num_top_layers (`int`, *optional*, defaults to 4):
            Top layers mean-pooled and concatenated into the sentence embedding.
        classifier_hidden_size (`int`, *optional*, defaults to 512):
            Width of the pair head's hidden layer.
        task (`str`, *optional*, defaults to `"regression"`):
            `"regression"` (scores, MSE) or `"classification"` (class ids, cross-entropy).
        teacher_learning_rate (`float`, *optional*, defaults to 2e-5):
            Learning rate of the teacher fine-tune.
        teacher_epochs (`float`, *optional*, defaults to 1.0):
            Epochs of the teacher fine-tune.
        teacher_batch_size (`int`, *optional*, defaults to 16):
            Pairs per step of the teacher fine-tune.
        teacher_max_length (`int`, *optional*, defaults to 128):
            Pair truncation length of the teacher (fine-tune and logits; a `CrossEncoderReranker` teacher uses
            its own `max_seq_length`).
    """

    distill_weight: float = 0.5
    num_top_layers: int = 4
    classifier_hidden_size: int = 512
    task: str = "regression"
    teacher_learning_rate: float = 2e-5
    teacher_epochs: float = 1.0
    teacher_batch_size: int = 16
    teacher_max_length: int = 128


def _split_name(source: dict[str, Any]) -> str | None:
    split = source.get("split")
    return str(split) if split is not None else None


def run_dse_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """Distil a cross-encoder teacher into a [`DistilledPairScorer`] as the recipe says; return the figures.

    Args:
        recipe (`dict`):
            The resolved recipe (see the module docstring for its sections).

    Returns:
        `dict`: `teacher` and `student` figures per evaluated split (`eval`, and `test` when given), `teacher_folder`,
        `output` (the saved student's folder) and `is_main_process`.
    """
    model_cfg = dict(recipe.get("model") or {})
    data_cfg = dict(recipe.get("data") or {})
    if "name_or_path" not in model_cfg:
        raise RecipeError("The dse recipe's model section needs name_or_path (the student's encoder).")
    if "train" not in data_cfg:
        raise RecipeError("The dse recipe's data section needs a train source (labelled pairs).")
    method = read_method(DSEMethod, recipe.get("method"), task="dse")
    if method.task not in DSE_TASKS:
        raise RecipeError(f"method.task must be one of {DSE_TASKS}, got {method.task!r}.")
    defaults: dict[str, Any] = {"output_dir": "hf-contrastive-output/dse", "report_to": "none"}
    if data_cfg.get("dataset_name"):
        defaults["dataset_name"] = data_cfg["dataset_name"]
    args = build_args(DSETrainingArguments, recipe.get("args"), method=method, defaults=defaults)
    output = Path(args.output_dir)

    train = load_source(data_cfg["train"])
    rows = data_cfg.get("train_rows")
    if rows is not None:
        if rows < 1 or rows > len(train):
            raise RecipeError(
                f"data.train_rows must be between 1 and {len(train)} (the training pairs), got {rows}."
            )
        train = train.shuffle(seed=args.seed).select(range(rows))
    evaluations = {name: load_source(data_cfg[name]) for name in ("eval", "test") if data_cfg.get(name)}
    label = resolve_label_column(train.column_names, args.label_column)
    columns = (args.sentence1_column, args.sentence2_column, label)
    student_path = model_cfg.pop("name_or_path")

    teacher_folder = data_cfg.get("teacher")
    if not teacher_folder:
        teacher_folder = finetune_teacher(
            data_cfg.get("teacher_backbone") or student_path,
            train,
            output / "teacher",
            task=method.task,
            num_labels=model_cfg.get("num_labels"),
            columns=columns,
            learning_rate=method.teacher_learning_rate,
            num_train_epochs=method.teacher_epochs,
            per_device_train_batch_size=method.teacher_batch_size,
            max_length=method.teacher_max_length,
            seed=args.seed,
        )
    teacher, teacher_tokenizer = load_teacher(teacher_folder)
    if teacher_kind(teacher) == "pair_module":
        args.teacher_max_length = None  # it truncates at its own config.max_seq_length
    cache_dir = Path(data_cfg.get("teacher_cache_dir") or output / "teacher-cache")

    student = DistilledPairScorer.from_backbone(
        student_path,
        num_top_layers=method.num_top_layers,
        classifier_hidden_size=method.classifier_hidden_size,
        task=method.task,
        **model_cfg,
    )
    trainer = DSETrainer(
        model=student,
        args=args,
        train_dataset=train,
        eval_dataset=evaluations.get("eval"),
        teacher=teacher,
        teacher_cache=cache_dir / "train.safetensors",
        teacher_tokenizer=teacher_tokenizer,
    )
    results: dict[str, Any] = {
        "teacher": {},
        "student": {},
        "teacher_folder": str(Path(teacher_folder).resolve()),
    }
    for name, data in evaluations.items():
        logits = cached_teacher_logits(
            teacher,
            list(data[args.sentence1_column]),
            list(data[args.sentence2_column]),
            cache_dir / f"{name}.safetensors",
            teacher_tokenizer,
            args.teacher_max_length,
            args.teacher_batch_size,
        )
        gold = data[resolve_label_column(data.column_names, args.label_column)]
        results["teacher"][name] = evaluate_pair_scores(logits, gold, method.task)
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    info = student.card_info
    for name, data in evaluations.items():
        figures = trainer.evaluate(data, metric_key_prefix=name)
        results["student"][name] = {k.removeprefix(f"{name}_"): v for k, v in figures.items()}
        metric = "spearman" if method.task == "regression" else "accuracy"
        info.add_result(
            EvalEntry(
                task_type="sentence-similarity" if method.task == "regression" else "text-classification",
                dataset_name=data_cfg.get("dataset_name") or name,
                dataset_type=data_cfg.get("dataset_name") or name,
                dataset_split=_split_name(data_cfg[name]) or name,
                metric_type=metric,
                metric_name=metric.capitalize(),
                metric_value=float(results["student"][name][metric]),
            )
        )
    final = output / "final"
    if args.should_save:
        trainer.save_scorer(final)
    results["output"] = str(final.resolve())
    results["is_main_process"] = bool(args.should_save)
    return results


RECIPE_TASK = RecipeTask(
    name="dse",
    runner=run_dse_recipe,
    method=DSEMethod,
    description="Distilled Sentence Embedding: cross-encoder teacher -> siamese pair scorer, teacher vs student",
    model_schema=MODEL_SCHEMA,
    data_schema=DATA_SCHEMA,
    args_classes=(DSETrainingArguments,),
)
