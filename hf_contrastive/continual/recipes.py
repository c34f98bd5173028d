"""Recipe task `continual`: class-incremental relation classification on SemEval-2010 with COCONUT.

A recipe with `task: continual` has these sections::

    model:  {name_or_path: ${minilm}}                 # the encoder under a RelationClassifier (typed markers)
    data:   {source: semeval2010, num_tasks: 3, min_train_rows: 100, per_class: 100, dev_per_class: 30,
             eval: test | dev, label_texts: descriptions | names, schedule_seed: 0}
    method: {buffer_size: 150, nspt_weight: 0.1, input_label_weight: 0.1, ...}   # ContinualMethod
    args:   ContinualConfig fields (num_train_epochs is per task)

The classes are SemEval-2010's directed relations with at least `min_train_rows` training sentences (`Other`
left out), shuffled by `schedule_seed` into `num_tasks` tasks. `per_class` training sentences per class are used;
`dev_per_class` other training sentences per class form the dev split (`eval: dev`, to choose settings), and
`eval: test` measures on the SemEval test sentences of those classes. `label_texts: descriptions` gives the
input-label contrast each relation's description (`the first entity causes or produces the second entity`),
`names` the class name as words.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import AutoModel, AutoTokenizer

from hf_contrastive.continual.schedule import TaskSchedule
from hf_contrastive.continual.trainer import ContinualConfig, ContinualTrainer, humanize_label
from hf_contrastive.core.recipes import RecipeError, RecipeTask, build_args, read_method
from hf_contrastive.relation import RelationClassifier, RelationExample, load_semeval2010
from hf_contrastive.relation.knowledge import SEMEVAL_RELATION_DESCRIPTIONS

__all__ = [
    "CONTINUAL_TASK",
    "ContinualMethod",
    "relation_description",
    "run_continual_recipe",
    "semeval_incremental_split",
]


def relation_description(label: str) -> str:
    """A SemEval-2010 relation's description without its example, the entity tags as words.

    Args:
        label (`str`): a directed SemEval-2010 label such as `"Cause-Effect(e1,e2)"`.
    """
    if label not in SEMEVAL_RELATION_DESCRIPTIONS:
        return humanize_label(label)
    text = SEMEVAL_RELATION_DESCRIPTIONS[label].split(" Example:")[0]
    return text.replace("<e1>", "the first entity").replace("<e2>", "the second entity")


def semeval_incremental_split(
    per_class: int = 100, dev_per_class: int = 30, min_train_rows: int = 100, seed: int = 0
) -> tuple[list[str], list[RelationExample], list[RelationExample], list[RelationExample]]:
    """SemEval-2010 for class-incremental learning: `(classes, train, dev, test)`.

    Args:
        per_class (`int`, *optional*, defaults to 100): training sentences kept per class.
        dev_per_class (`int`, *optional*, defaults to 30): further training sentences per class held out as dev.
        min_train_rows (`int`, *optional*, defaults to 100): classes with fewer training sentences are left out
            (and `Other` always is).
        seed (`int`, *optional*, defaults to 0): shuffles each class's sentences before the split.

    Returns:
        `tuple`: the classes (sorted), the training rows, the dev rows and the test rows of those classes.
    """
    if per_class < 1 or dev_per_class < 0:
        raise ValueError(
            f"per_class must be >= 1 and dev_per_class >= 0, got {per_class} and {dev_per_class}."
        )
    by_class: dict[str, list[RelationExample]] = defaultdict(list)
    for e in load_semeval2010("train"):
        by_class[e.label].append(e)
    classes = sorted(c for c, rows in by_class.items() if c != "Other" and len(rows) >= min_train_rows)
    if len(classes) < 2:
        raise ValueError(f"only {len(classes)} classes have >= {min_train_rows} training sentences.")
    rng = random.Random(seed)
    train, dev = [], []
    for c in classes:
        rows = list(by_class[c])
        rng.shuffle(rows)
        dev += rows[:dev_per_class]
        train += rows[dev_per_class : dev_per_class + per_class]
    test = [e for e in load_semeval2010("test") if e.label in set(classes)]
    return classes, train, dev, test


@dataclass
class ContinualMethod:
    r"""The `method` section of `continual` recipes (each the [`ContinualConfig`] field of the same name). COCONUT
    (Cappellazzo et al. 2024) combines experience replay, NSPT and the multimodal (here input-label) term; its
    weights, temperatures and buffer size are not public, so these defaults are this library's, chosen on the
    SemEval dev split (`examples/continual_relations.py`, seed 0, final average accuracy: replay alone 41.1, NSPT and
    input-label weights 1.0 / 0.3 / 0.1 gave 32.2 / 34.0 / 41.6; each term alone at 1.0 gave 24.0 / 28.0).

    Args:
        buffer_size (`int`, *optional*, defaults to 150): rehearsal rows.
        buffer_selection (`str`, *optional*, defaults to `"random"`): `random` or `herding`.
        buffer_class_balanced (`bool`, *optional*, defaults to `True`): equal shares per class.
        nspt_weight (`float`, *optional*, defaults to 0.1): NSPT on rehearsal rows.
        nspt_temperature (`float`, *optional*, defaults to 0.1).
        input_label_weight (`float`, *optional*, defaults to 0.1): input-label contrast on new rows.
        input_label_temperature (`float`, *optional*, defaults to 0.1).
        distillation_weight (`float`, *optional*, defaults to 0.0): logit distillation over the old classes.
        distillation_temperature (`float`, *optional*, defaults to 2.0).
        projection_dim (`int`, *optional*, defaults to 128): size of the training-only projections.
    """

    buffer_size: int = 150
    buffer_selection: str = "random"
    buffer_class_balanced: bool = True
    nspt_weight: float = 0.1
    nspt_temperature: float = 0.1
    input_label_weight: float = 0.1
    input_label_temperature: float = 0.1
    distillation_weight: float = 0.0
    distillation_temperature: float = 2.0
    projection_dim: int = 128


MODEL_SCHEMA: dict[str, Any] = {"name_or_path": str, "marker_scheme": str, "max_seq_length": int}
DATA_SCHEMA: dict[str, Any] = {
    "source": str,
    "num_tasks": int,
    "min_train_rows": int,
    "per_class": int,
    "dev_per_class": int,
    "eval": str,
    "label_texts": str,
    "schedule_seed": int,
    "split_seed": int,
    "dataset_name": str,
}


def run_continual_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """Learn SemEval-2010's relations task by task as the recipe says; return the accuracy matrix and forgetting.

    Args:
        recipe (`dict`): the resolved recipe (see the module docstring for its sections).

    Returns:
        `dict`: `classes`, `schedule`, `train_rows`, `eval_rows`, `accuracy_matrix`, `average_accuracy`,
        `final_average_accuracy`, `forgetting`, `backward_transfer`, `output` (the final model's folder) and
        `is_main_process`.
    """
    model_cfg = dict(recipe.get("model") or {})
    data_cfg = dict(recipe.get("data") or {})
    if recipe.get("lora"):
        raise RecipeError("Task 'continual' trains its encoder in full; remove the lora section.")
    if "name_or_path" not in model_cfg:
        raise RecipeError("The continual recipe's model section needs name_or_path (an encoder).")
    if data_cfg.get("source", "semeval2010") != "semeval2010":
        raise RecipeError(f"data.source must be 'semeval2010', got {data_cfg.get('source')!r}.")
    evaluation_split = data_cfg.get("eval", "test")
    if evaluation_split not in ("test", "dev"):
        raise RecipeError(f"data.eval must be 'test' or 'dev', got {evaluation_split!r}.")
    texts_kind = data_cfg.get("label_texts", "descriptions")
    if texts_kind not in ("descriptions", "names"):
        raise RecipeError(f"data.label_texts must be 'descriptions' or 'names', got {texts_kind!r}.")
    method = read_method(ContinualMethod, recipe.get("method"), task="continual")
    args = build_args(
        ContinualConfig,
        recipe.get("args"),
        method=method,
        defaults={"output_dir": "hf-contrastive-output/continual", "report_to": "none"},
    )
    classes, train, dev, test = semeval_incremental_split(
        per_class=int(data_cfg.get("per_class", 100)),
        dev_per_class=int(data_cfg.get("dev_per_class", 30)),
        min_train_rows=int(data_cfg.get("min_train_rows", 100)),
        seed=int(data_cfg.get("split_seed", 0)),
    )
    evaluation = dev if evaluation_split == "dev" else test
    schedule = TaskSchedule.split(
        classes, int(data_cfg.get("num_tasks", 3)), seed=int(data_cfg.get("schedule_seed", 0))
    )
    name = model_cfg.pop("name_or_path")
    tokenizer = AutoTokenizer.from_pretrained(name)
    model = RelationClassifier.from_backbone(
        AutoModel.from_pretrained(name), classes, tokenizer=tokenizer, **model_cfg
    )
    label_texts = {
        c: relation_description(c) if texts_kind == "descriptions" else humanize_label(c) for c in classes
    }
    trainer = ContinualTrainer(
        model, args, train_dataset=train, eval_dataset=evaluation, schedule=schedule, label_texts=label_texts
    )
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    final = Path(args.output_dir) / "final"
    info = model.card_info
    info.datasets = [str(data_cfg.get("dataset_name", "SemEval-2010 Task 8"))]
    results = trainer.continual_results()
    info.training = {
        "objective": "class-incremental cross-entropy"
        + (f" + NSPT ({args.nspt_weight})" if args.nspt_weight else "")
        + (f" + input-label contrast ({args.input_label_weight})" if args.input_label_weight else "")
        + (f" + distillation ({args.distillation_weight})" if args.distillation_weight else ""),
        "tasks": [list(t) for t in schedule.tasks],
        "rehearsal buffer": args.buffer_size,
        "epochs per task": args.num_train_epochs,
        "learning rate": args.learning_rate,
        "seed": args.seed,
        f"average accuracy after each task ({evaluation_split})": [
            round(a, 4) for a in results["average_accuracy"]
        ],
        "forgetting": round(results["forgetting"], 4),
    }
    if args.should_save:
        trainer.save_model(str(final))
    return {
        "classes": classes,
        "train_rows": len(train),
        "eval_rows": len(evaluation),
        **results,
        "output": str(final.resolve()),
        "is_main_process": bool(args.should_save),
    }


CONTINUAL_TASK = RecipeTask(
    name="continual",
    runner=run_continual_recipe,
    method=ContinualMethod,
    description="COCONUT class-incremental relation classification (replay, NSPT, input-label contrast)",
    model_schema=MODEL_SCHEMA,
    data_schema=DATA_SCHEMA,
    args_classes=(ContinualConfig,),
)
