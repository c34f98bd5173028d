"""The generic parts of a training recipe: reading, overriding and checking its sections.

A recipe is a YAML mapping with a `task` and up to five sections::

    task:   contrastive                                        # which runner (see hf_contrastive.recipes)
    model:  {name_or_path: ${minilm}, pooling: mean}           # how to build the model
    data:   {train: ..., eval_...: ...}                        # what to train and evaluate on
    method: {loss: simcse_unsup, temperature: 0.05}            # the paper's settings (the task's dataclass)
    args:   {learning_rate: 3e-5, output_dir: ...}             # TrainingArguments fields
    lora:   {r: 8, lora_alpha: 16, target_modules: [q, v]}     # optional, peft.LoraConfig fields

`method` is read into the dataclass the task declares ([`RecipeTask.method`]); its defaults are the
paper's and unknown keys are refused. Evaluation settings belong to `data` (`eval_*` keys, or an
`eval` source). `${data}` is the benchmark data folder (`$HF_CONTRASTIVE_DATA`), `${minilm}`
the packaged all-MiniLM-L6-v2 and `${output}` the value of `args.output_dir`.

Sections of release 0.1 still read, with a `FutureWarning`, until release 0.3: `reranker`, `span`,
`negation` and `tkre` are merged into `method`; `eval: {batch_size: 4}` becomes
`data: {eval_batch_size: 4}`; a method setting written under `args` moves to `method`.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from peft import LoraConfig

from hf_contrastive.core.utils import data_dir, packaged_minilm_path, resource_dir

__all__ = [
    "LEGACY_SECTIONS",
    "SECTIONS",
    "RecipeTask",
    "apply_overrides",
    "build_args",
    "lora_config",
    "normalize_sections",
    "read_method",
    "read_recipe_file",
    "recipe_path",
    "resolve_placeholders",
]

SECTIONS = ("model", "data", "method", "args", "lora")
"""The sections every recipe task accepts."""

LEGACY_SECTIONS = ("reranker", "span", "negation", "tkre", "eval")
"""Section names of release 0.1, read with a `FutureWarning` until release 0.3 (see the module docstring)."""

REMOVED_IN = "0.3"


@dataclasses.dataclass(frozen=True)
class RecipeTask:
    """A recipe task: what `task: NAME` in a recipe runs, and what the recipe may hold.

    Args:
        name (`str`):
            The value of the recipe's `task` key.
        runner (`Callable[[dict], dict]`):
            Takes the resolved recipe (a dict of sections) and returns its figures.
        method (`type`, *optional*):
            The dataclass of the task's method settings; the `method` section is read into it
            ([`read_method`]). `None`: the task has no method settings (a `method` section is refused).
        legacy_sections (`tuple[str, ...]`, *optional*, defaults to `()`):
            Section names of release 0.1 this task still reads (a subset of `LEGACY_SECTIONS`).
        description (`str`, *optional*, defaults to `""`):
            One line for listings.
    """

    name: str
    runner: Callable[[dict[str, Any]], dict[str, Any]]
    method: type | None = None
    legacy_sections: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if self.method is not None and not dataclasses.is_dataclass(self.method):
            raise TypeError(f"RecipeTask {self.name!r}: method must be a dataclass, got {self.method!r}.")
        unknown = sorted(set(self.legacy_sections) - set(LEGACY_SECTIONS))
        if unknown:
            raise ValueError(f"RecipeTask {self.name!r}: unknown legacy section(s) {unknown}.")

    @property
    def sections(self) -> tuple[str, ...]:
        """Every section name a recipe of this task may hold (legacy names included)."""
        return (*SECTIONS, *self.legacy_sections)

    @property
    def method_fields(self) -> tuple[str, ...]:
        """The names of the task's method settings."""
        return tuple(f.name for f in dataclasses.fields(self.method)) if self.method else ()

    def read_method(self, recipe: dict[str, Any]) -> Any:
        """The recipe's `method` section as the task's dataclass (None when the task declares none)."""
        section = recipe.get("method") or {}
        if self.method is None:
            if section:
                raise ValueError(
                    f"Recipe task {self.name!r} takes no method settings, got {sorted(section)}."
                )
            return None
        return read_method(self.method, section, task=self.name)


def recipe_path(name_or_path: str | os.PathLike) -> Path:
    """A recipe file: an existing path, or the name of a packaged recipe (`simcse-unsup`).

    Args:
        name_or_path (`str` or `os.PathLike`):
            A YAML file, or the stem of a packaged recipe (with or without `.yaml`).
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    packaged = resource_dir("recipes") / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    if packaged.is_file():
        return packaged
    available = sorted(p.stem for p in resource_dir("recipes").glob("*.yaml"))
    raise ValueError(f"Recipe {str(name_or_path)!r} not found; packaged recipes: {available}.")


def read_recipe_file(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping of a recipe YAML file (an empty file is an empty recipe)."""
    recipe = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(recipe, dict):
        raise ValueError(f"{path}: a recipe is a mapping with sections {SECTIONS}.")
    return recipe


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


def _legacy_warning(what: str, instead: str) -> None:
    warnings.warn(
        f"{what} is deprecated and will be removed in release {REMOVED_IN}; use {instead}.",
        FutureWarning,
        stacklevel=4,
    )


def apply_overrides(
    recipe: dict[str, Any],
    overrides: list[str],
    sections: tuple[str, ...] = SECTIONS,
    method_fields: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Apply `--section.key value` (or `--key=value`) overrides to a recipe dict (copied).

    Args:
        recipe (`dict`):
            The recipe; it is not modified.
        overrides (`list[str]`):
            Command-line tokens such as `["--args.learning_rate", "1e-4", "--model.pooling=cls"]`. Values
            are read as YAML (`[a, b]` is a list, `true` a boolean, `2e-5` a float).
        sections (`tuple[str, ...]`, *optional*, defaults to `SECTIONS`):
            Section names; a key whose first part is none of them goes to `method` when it names a method
            setting, else to `args`. A legacy section name (`--span.eps`) is rewritten to its new home with
            a `FutureWarning`.
        method_fields (`tuple[str, ...]`, *optional*, defaults to `()`):
            The task's method settings; `--args.NAME` for one of them is rewritten to `--method.NAME`
            with a `FutureWarning`.
    """
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
        if parts[0] in LEGACY_SECTIONS and parts[0] in sections and len(parts) > 1:
            if parts[0] == "eval":
                new = ["data", f"eval_{parts[1]}", *parts[2:]]
            else:
                new = ["method", *parts[1:]]
            _legacy_warning(f"The override --{key}", f"--{'.'.join(new)}")
            parts = new
        elif parts[0] not in sections:
            parts = ["method" if parts[0] in method_fields else "args", *parts]
        elif parts[0] == "args" and len(parts) == 2 and parts[1] in method_fields:
            _legacy_warning(f"The override --{key} (a method setting)", f"--method.{parts[1]}")
            parts = ["method", parts[1]]
        node = recipe
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"Cannot override {key}: {part} is not a section.")
        node[parts[-1]] = _parse_value(raw)
    return recipe


def _merge_into(recipe: dict[str, Any], section: str, values: dict[str, Any], origin: str) -> None:
    target = recipe.setdefault(section, {})
    if not isinstance(target, dict):
        raise ValueError(f"The recipe's {section} section must be a mapping, got {target!r}.")
    clash = sorted(set(target) & set(values))
    if clash:
        raise ValueError(f"{clash} given both in {origin} and in {section}: keep one.")
    target.update(values)


def normalize_sections(
    recipe: dict[str, Any], task: RecipeTask, source: str | os.PathLike = "recipe"
) -> dict[str, Any]:
    """Check a recipe's section names and move settings of release 0.1 to their new homes (copied).

    Unknown sections are refused. Legacy sections the task reads (`span`, `negation`, `reranker`,
    `tkre`) are merged into `method` and `eval` into `data` (`batch_size` -> `eval_batch_size`),
    and method settings written under `args` move to `method`, each with a `FutureWarning`; a key given
    in both places is refused.

    Args:
        recipe (`dict`):
            The recipe's sections (a `task` key is kept as it is).
        task (`RecipeTask`):
            The task the recipe runs.
        source (`str` or `os.PathLike`, *optional*, defaults to `"recipe"`):
            Where the recipe came from, for messages.
    """
    recipe = copy.deepcopy(recipe)
    unknown = sorted(set(recipe) - {"task", *task.sections})
    if unknown:
        raise ValueError(
            f"{source}: unknown section(s) {unknown}; expected {list(SECTIONS)} for task {task.name!r}."
        )
    for name in task.legacy_sections:
        if name not in recipe:
            continue
        values = recipe.pop(name) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{source}: the {name} section must be a mapping, got {values!r}.")
        if name == "eval":
            _legacy_warning(f"{source}: the 'eval' section", "eval_* keys of the 'data' section")
            _merge_into(recipe, "data", {f"eval_{k}": v for k, v in values.items()}, "eval")
        else:
            _legacy_warning(f"{source}: the {name!r} section", "the 'method' section")
            _merge_into(recipe, "method", values, name)
    args = recipe.get("args")
    if isinstance(args, dict) and task.method_fields:
        moved = {k: args[k] for k in task.method_fields if k in args}
        if moved:
            _legacy_warning(
                f"{source}: method setting(s) {sorted(moved)} under 'args'", "the 'method' section"
            )
            for k in moved:
                del args[k]
            _merge_into(recipe, "method", moved, "args")
    for name in ("method", "data", "model", "args", "lora"):
        if name in recipe and recipe[name] is None:
            recipe[name] = {}
    return recipe


def resolve_placeholders(recipe: dict[str, Any]) -> dict[str, Any]:
    """Replace `${data}`, `${minilm}` and `${output}` in every string of the recipe (copied)."""
    minilm = packaged_minilm_path()
    values = {
        "data": str(data_dir()),
        "minilm": str(minilm) if minilm else "sentence-transformers/all-MiniLM-L6-v2",
        "output": str((recipe.get("args") or {}).get("output_dir", "hf-contrastive-output")),
    }
    return _substitute(recipe, values)


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


def read_method(method_cls: type, section: dict[str, Any] | None, task: str | None = None) -> Any:
    """A recipe's `method` section as the task's dataclass; unknown keys are refused.

    Args:
        method_cls (`type`):
            The dataclass of the method settings (its defaults are the paper's).
        section (`dict`, *optional*):
            The `method` section; missing keys take the dataclass defaults.
        task (`str`, *optional*):
            The task name, for messages.
    """
    section = dict(section or {})
    known = [f.name for f in dataclasses.fields(method_cls) if f.init]
    bad = sorted(set(section) - set(known))
    if bad:
        where = f" of task {task!r}" if task else ""
        raise ValueError(
            f"Unknown method setting(s) {bad}{where} ({method_cls.__name__}); known settings: {sorted(known)}."
        )
    return method_cls(**section)


def build_args(
    config_cls: type,
    section: dict[str, Any] | None,
    method: Any = None,
    defaults: dict[str, Any] | None = None,
) -> Any:
    """A recipe's `args` section as `config_cls` (a `TrainingArguments` dataclass); unknown keys refused.

    Args:
        config_cls (`type`):
            The `TrainingArguments` subclass of the trainer.
        section (`dict`, *optional*):
            The `args` section.
        method (dataclass instance, *optional*):
            The method settings; those that are also fields of `config_cls` are passed to it.
        defaults (`dict`, *optional*):
            Values used where `section` gives none (`output_dir`, `report_to`, ...).
    """
    cfg = {**(defaults or {}), **dict(section or {})}
    fields = set(config_cls.__dataclass_fields__)
    bad = sorted(set(cfg) - fields)
    if bad:
        raise ValueError(
            f"Unknown training argument(s) {bad} ({config_cls.__name__} / TrainingArguments fields)."
        )
    if method is not None:
        settings = {f.name: getattr(method, f.name) for f in dataclasses.fields(method)}
        cfg.update({k: v for k, v in settings.items() if k in fields})
    return config_cls(**cfg)


def lora_config(section: dict[str, Any] | None, task_type: str | None = None) -> LoraConfig | None:
    """The recipe's `lora` section as a `peft.LoraConfig` (None when the section is absent or empty).

    Args:
        section (`dict`, *optional*):
            `peft.LoraConfig` fields (`r`, `lora_alpha`, `target_modules`, ...); unknown keys are refused.
        task_type (`str`, *optional*):
            PEFT task type used when the section names none (`"CAUSAL_LM"` for causal LMs).
    """
    if not section:
        return None
    section = dict(section)
    known = {f.name for f in dataclasses.fields(LoraConfig) if f.init}
    bad = sorted(set(section) - known)
    if bad:
        raise ValueError(f"Unknown LoRA setting(s) {bad} in the lora section (peft.LoraConfig fields).")
    if task_type is not None:
        section.setdefault("task_type", task_type)
    return LoraConfig(**section)
