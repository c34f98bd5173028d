"""Training recipes: one YAML file per method, run by ``hf-contrastive train RECIPE``.

A recipe has four sections::

    model:  {name_or_path: ${minilm}, pooling: mean, ...}    # SentenceEncoder.from_pretrained arguments
    data:   {train: {type: text, path: ${data}/corpus/...}, eval_sts: dev, dataset_name: ...}
    args:   {learning_rate: 3e-5, per_device_train_batch_size: 64, ...}   # ContrastiveConfig fields
    lora:   {r: 8, lora_alpha: 16, target_modules: [query, value]}       # optional (peft.LoraConfig)

``${data}`` is the benchmark data folder (``$HF_CONTRASTIVE_DATA``), ``${minilm}`` the packaged
all-MiniLM-L6-v2, ``${output}`` the value of ``args.output_dir``. Command-line overrides use
dotted keys (``--args.learning_rate 1e-4 --model.pooling cls``); a key without a section goes to
``args``. The same command runs under ``accelerate launch --multi_gpu --num_processes N -m hf_contrastive
train RECIPE`` or ``torchrun --nproc_per_node N -m hf_contrastive train RECIPE``.

A recipe may name its ``task`` (default ``contrastive``); each task is run by the function named in
``RECIPE_TASKS`` (``"module:function"``, imported on use), which receives the resolved recipe dict and
returns its figures. Tasks other than ``contrastive`` declare their own sections in the module-level
``RECIPE_SECTIONS`` of their module (the four above are always allowed).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from hf_contrastive.core.utils import data_dir, packaged_minilm_path, resource_dir

SECTIONS = ("model", "data", "args", "lora")

# task name -> "module:function"; the function takes the resolved recipe and returns a dict of figures.
RECIPE_TASKS: dict[str, str] = {
    "contrastive": "hf_contrastive.recipes.registry:run_contrastive_recipe",
    "retrieval": "hf_contrastive.retrieval.recipes:run_retrieval_recipe",
    "faithful-unlikelihood": "hf_contrastive.faithfulness.trainer:run_span_unlikelihood_recipe",
    "faithful-task-negation": "hf_contrastive.faithfulness.arithmetic.negation:run_negation_recipe",
    "reranker": "hf_contrastive.retrieval.rerankers.recipes:run_reranker_recipe",
    "relation": "hf_contrastive.relation.tkre:run_relation_recipe",
}


def _task_function(task: str):
    import importlib

    if task not in RECIPE_TASKS:
        raise ValueError(f"Unknown recipe task {task!r}; known tasks: {sorted(RECIPE_TASKS)}.")
    module_name, _, func = RECIPE_TASKS[task].partition(":")
    module = importlib.import_module(module_name)
    return module, getattr(module, func)


def _allowed_sections(task: str) -> tuple[str, ...]:
    if task == "contrastive":
        return SECTIONS
    module, _ = _task_function(task)
    return tuple(dict.fromkeys((*SECTIONS, *getattr(module, "RECIPE_SECTIONS", ()))))


def recipe_path(name_or_path: str | os.PathLike) -> Path:
    """A recipe file: an existing path, or the name of a packaged recipe (``simcse-unsup``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    packaged = resource_dir("recipes") / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    if packaged.is_file():
        return packaged
    available = sorted(p.stem for p in resource_dir("recipes").glob("*.yaml"))
    raise ValueError(f"Recipe {str(name_or_path)!r} not found; packaged recipes: {available}.")


def _parse_value(text: str) -> Any:
    value = yaml.safe_load(text)
    if isinstance(value, bool) and text.lower() not in ("true", "false"):
        return text  # YAML 1.1 reads "no"/"yes"/"on"/"off" as booleans; "--eval_strategy no" means the string
    if isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 leaves "2e-5" (no dot) as a string
        except ValueError:
            return value
    return text if value is None and text not in ("null", "~", "") else value


def apply_overrides(
    recipe: dict[str, Any], overrides: list[str], sections: tuple[str, ...] = SECTIONS
) -> dict[str, Any]:
    """Apply ``--section.key value`` (or ``--key=value``) overrides to a recipe dict (copied)."""
    recipe = copy.deepcopy(recipe)
    i = 0
    while i < len(overrides):
        token = overrides[i]
        if not token.startswith("--"):
            raise ValueError(f"Expected an override like --args.learning_rate 1e-4, got {token!r}.")
        key = token[2:]
        if "=" in key:
            key, raw = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(overrides):
                raise ValueError(f"Override {token} has no value.")
            raw = overrides[i + 1]
            i += 2
        parts = key.replace("-", "_").split(".")
        if parts[0] not in sections:
            parts = ["args", *parts]
        node = recipe
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"Cannot override {key}: {part} is not a section.")
        node[parts[-1]] = _parse_value(raw)
    return recipe


def _substitute(obj: Any, values: dict[str, str]) -> Any:
    if isinstance(obj, str):
        for k, v in values.items():
            obj = obj.replace("${" + k + "}", v)
        return obj
    if isinstance(obj, dict):
        return {k: _substitute(v, values) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_substitute(v, values) for v in obj]
    return obj


def load_recipe(name_or_path: str | os.PathLike, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read, override and resolve a recipe; unknown sections are refused."""
    path = recipe_path(name_or_path)
    recipe = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(recipe, dict):
        raise ValueError(f"{path}: a recipe is a mapping with sections {SECTIONS}.")
    task = str(recipe.pop("task", "contrastive"))
    sections = _allowed_sections(task)
    unknown = sorted(set(recipe) - set(sections))
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {unknown}; expected {sections} for task {task!r}.")
    recipe = apply_overrides(recipe, overrides or [], sections=sections)
    recipe["task"] = task
    minilm = packaged_minilm_path()
    values = {
        "data": str(data_dir()),
        "minilm": str(minilm) if minilm else "sentence-transformers/all-MiniLM-L6-v2",
    }
    values["output"] = str(recipe.get("args", {}).get("output_dir", "hf-contrastive-output"))
    return _substitute(recipe, values)


def build_args(config_cls: type, args_cfg: dict[str, Any]):
    """The recipe's ``args`` section as ``config_cls`` (a `TrainingArguments` dataclass); unknown keys refused."""
    bad = sorted(set(args_cfg) - set(config_cls.__dataclass_fields__))
    if bad:
        raise ValueError(
            f"Unknown training argument(s) {bad} ({config_cls.__name__} / TrainingArguments fields)."
        )
    return config_cls(**args_cfg)


def run_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """Run a resolved recipe with the function of its task; return the figures."""
    recipe = dict(recipe)
    task = str(recipe.pop("task", "contrastive"))
    _, func = _task_function(task)
    return func(recipe)


def run_contrastive_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """Train a sentence encoder as the recipe says, evaluate, save a Hub-ready encoder; return the figures."""
    from hf_contrastive.core.data.loaders import load_source
    from hf_contrastive.embeddings.modeling import SentenceEncoder
    from hf_contrastive.embeddings.sts import STSEvaluator
    from hf_contrastive.embeddings.trainer import ContrastiveConfig, ContrastiveTrainer

    model_cfg = dict(recipe.get("model") or {})
    if "name_or_path" not in model_cfg:
        raise ValueError("The recipe's model section needs name_or_path.")
    data_cfg = dict(recipe.get("data") or {})
    if "train" not in data_cfg:
        raise ValueError("The recipe's data section needs a train source.")
    args_cfg = dict(recipe.get("args") or {})
    args_cfg.setdefault("output_dir", "hf-contrastive-output")
    args_cfg.setdefault("report_to", "none")
    if data_cfg.get("dataset_name"):
        args_cfg.setdefault("dataset_name", data_cfg["dataset_name"])
    args = build_args(ContrastiveConfig, args_cfg)

    model = SentenceEncoder.from_pretrained(model_cfg.pop("name_or_path"), **model_cfg)
    train = load_source(data_cfg["train"])
    sts = None
    if data_cfg.get("eval_sts"):
        sts = STSEvaluator.sts_benchmark(str(data_cfg["eval_sts"]))
    peft_config = None
    if recipe.get("lora"):
        from peft import LoraConfig

        peft_config = LoraConfig(**recipe["lora"])
    trainer = ContrastiveTrainer(
        model=model, args=args, train_dataset=train, sts_evaluator=sts, peft_config=peft_config
    )
    results: dict[str, Any] = {}
    if sts is not None:
        results["before"] = trainer.evaluate()
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    if sts is not None:
        results["after"] = trainer.evaluate()
    final = Path(args.output_dir) / "final"
    if args.should_save:
        trainer.save_encoder(str(final), merge_lora=True)
    results["output"] = str(final.resolve())
    results["is_main_process"] = bool(args.should_save)
    return results


__all__ = [
    "RECIPE_TASKS",
    "load_recipe",
    "run_recipe",
    "run_contrastive_recipe",
    "apply_overrides",
    "recipe_path",
]
