"""Training recipes: one YAML file per method, run by `hf-contrastive train RECIPE`.

A recipe names its `task` (default `contrastive`) and holds up to five sections: `model`, `data`,
`method` (the paper's settings, read into the task's dataclass), `args` (`TrainingArguments` fields) and
`lora` (`peft.LoraConfig` fields); see `hf_contrastive.core.recipes` for the generic rules
(placeholders, overrides, the sections of release 0.1 still read).

`RECIPE_TASKS` maps each task name to its [`RecipeTask`]: the runner (which receives the resolved recipe
and returns its figures), the dataclass of its `method` section and the legacy sections it still reads.
The runners live in their wings (`embeddings/recipes.py`, `retrieval/recipes.py`,
`faithfulness/recipes.py`, `relation/recipes.py`, ...); a new wing adds its task with
[`register_recipe_task`]. Command-line overrides use dotted keys (``--args.learning_rate 1e-4
--method.temperature 0.1 --model.pooling cls`); a key without a section goes to `method`` when it names a
method setting and to `args` otherwise. The same command runs under ``accelerate launch --multi_gpu
--num_processes N -m hf_contrastive train RECIPE` or `torchrun --nproc_per_node N -m hf_contrastive train
RECIPE``.
"""

from __future__ import annotations

import os
from typing import Any

from hf_contrastive.continual.recipes import CONTINUAL_TASK as _CONTINUAL
from hf_contrastive.core.recipes import (
    RecipeError,
    RecipeTask,
    apply_overrides,
    build_args,
    lora_config,
    normalize_sections,
    read_recipe_file,
    recipe_path,
    resolve_placeholders,
)
from hf_contrastive.embeddings.debcse_recipes import DEBCSE_TASK as _DEBCSE
from hf_contrastive.embeddings.dse.recipes import RECIPE_TASK as _DSE
from hf_contrastive.embeddings.moe.recipes import MOE_TASK as _MOE
from hf_contrastive.embeddings.recipes import RECIPE_TASK as _CONTRASTIVE
from hf_contrastive.embeddings.recipes import run_contrastive_recipe
from hf_contrastive.embeddings.synthesis import RECIPE_TASK as _MULTICSR_DATA
from hf_contrastive.embeddings.text2token.recipes import RECIPE_TASK as _TEXT2TOKEN
from hf_contrastive.faithfulness.recipes import NEGATION_TASK as _NEGATION
from hf_contrastive.faithfulness.recipes import UNLIKELIHOOD_TASK as _UNLIKELIHOOD
from hf_contrastive.relation.recipes import RECIPE_TASK as _RELATION
from hf_contrastive.retrieval.recipes import RERANKER_TASK as _RERANKER
from hf_contrastive.retrieval.recipes import RETRIEVAL_TASK as _RETRIEVAL
from hf_contrastive.vision.close_recipes import RECIPE_TASK as _CLOSE
from hf_contrastive.vision.cosmo_recipes import RECIPE_TASK as _COSMO
from hf_contrastive.vision.dense.dito_recipes import DITO_TASK as _DITO
from hf_contrastive.vision.dense.pixpro_recipes import PIXPRO_TASK as _PIXPRO
from hf_contrastive.vision.hydra_recipes import HYDRA_TASK as _HYDRA
from hf_contrastive.vision.pixel_linguist_recipes import PIXEL_LINGUIST_TASK as _PIXEL_LINGUIST
from hf_contrastive.vision.recipes import RECIPE_TASK as _IMAGE_TEXT

__all__ = [
    "DEFAULT_TASK",
    "RECIPE_TASKS",
    "RecipeError",
    "RecipeTask",
    "apply_overrides",
    "build_args",
    "get_recipe_task",
    "load_recipe",
    "lora_config",
    "recipe_path",
    "register_recipe_task",
    "run_contrastive_recipe",
    "run_recipe",
]

DEFAULT_TASK = "contrastive"

RECIPE_TASKS: dict[str, RecipeTask] = {}
"""Task name -> [`RecipeTask`]; add to it with [`register_recipe_task`]."""


def register_recipe_task(task: RecipeTask, replace: bool = False) -> RecipeTask:
    """Make `task: NAME` runnable by `load_recipe` / `run_recipe` and the `train` verb.

    Args:
        task (`RecipeTask`):
            The task: its name, runner, method-settings dataclass and legacy sections.
        replace (`bool`, *optional*, defaults to `False`):
            Replace a task already registered under the same name (otherwise that is an error).

    Returns:
        `RecipeTask`: the task, registered.
    """
    if not isinstance(task, RecipeTask):
        raise TypeError(f"register_recipe_task takes a RecipeTask, got {type(task).__name__}.")
    if task.name in RECIPE_TASKS and not replace:
        raise ValueError(
            f"Recipe task {task.name!r} is already registered (pass replace=True to replace it)."
        )
    RECIPE_TASKS[task.name] = task
    return task


for _task in (
    _CONTRASTIVE,
    _DEBCSE,
    _DSE,
    _MOE,
    _MULTICSR_DATA,
    _TEXT2TOKEN,
    _RETRIEVAL,
    _RERANKER,
    _UNLIKELIHOOD,
    _NEGATION,
    _RELATION,
    _IMAGE_TEXT,
    _HYDRA,
    _DITO,
    _PIXPRO,
    _COSMO,
    _CLOSE,
    _PIXEL_LINGUIST,
    _CONTINUAL,
):
    register_recipe_task(_task)


def get_recipe_task(name: str) -> RecipeTask:
    """The registered [`RecipeTask`] called `name`; unknown names are refused with the known ones."""
    if name not in RECIPE_TASKS:
        raise RecipeError(f"Unknown recipe task {name!r}; known tasks: {sorted(RECIPE_TASKS)}.")
    return RECIPE_TASKS[name]


def load_recipe(name_or_path: str | os.PathLike, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read, override, check and resolve a recipe (what `hf-contrastive train NAME --print-recipe` prints).

    Unknown sections, unknown keys in every section (`model`, `data`, `method`, `args`, `lora`, against the
    task's schemas) and values of the wrong type are refused here ([`RecipeError`]); strings that stand
    for numbers (`"1e-4"`) are parsed where a number is expected. Sections of release 0.1 are moved to
    their new homes with a `FutureWarning`.

    Args:
        name_or_path (`str` or `os.PathLike`):
            A YAML file or the name of a packaged recipe (`simcse-unsup`).
        overrides (`list[str]`, *optional*):
            Command-line overrides (`["--args.learning_rate", "1e-4"]`).

    Returns:
        `dict`: the resolved recipe, its `task` key included.
    """
    path = recipe_path(name_or_path)
    raw = read_recipe_file(path)
    task = get_recipe_task(str(raw.pop("task", DEFAULT_TASK)))
    recipe = normalize_sections(raw, task, source=path)
    recipe = apply_overrides(
        recipe, overrides or [], sections=task.sections, method_fields=task.method_fields
    )
    recipe = normalize_sections(recipe, task, source=path)
    recipe = task.check(recipe)
    task.read_method(recipe)
    lora_config(recipe.get("lora"))
    recipe["task"] = task.name
    return resolve_placeholders(recipe)


def run_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """Run a resolved recipe with the runner of its task; return the figures.

    Args:
        recipe (`dict`):
            A recipe from `load_recipe`, or a dict of the same shape (legacy sections are moved, with a
            `FutureWarning`).
    """
    recipe = dict(recipe)
    task = get_recipe_task(str(recipe.pop("task", DEFAULT_TASK)))
    recipe = task.check(normalize_sections(recipe, task))
    task.read_method(recipe)
    return task.runner(recipe)
