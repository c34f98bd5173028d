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
import difflib
import enum
import inspect
import os
import types
import typing
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from peft import LoraConfig

from hf_contrastive.core.utils import data_dir, packaged_minilm_path, resource_dir

__all__ = [
    "BACKBONE_LOAD_OPTIONS",
    "LEGACY_SECTIONS",
    "SECTIONS",
    "RecipeError",
    "RecipeTask",
    "apply_overrides",
    "build_args",
    "check_section",
    "coerce_value",
    "lora_config",
    "normalize_sections",
    "read_method",
    "read_recipe_file",
    "recipe_path",
    "resolve_placeholders",
    "schema_of",
]

SECTIONS = ("model", "data", "method", "args", "lora")
"""The sections every recipe task accepts."""

LEGACY_SECTIONS = ("reranker", "span", "negation", "tkre", "eval")
"""Section names of release 0.1, read with a `FutureWarning` until release 0.3 (see the module docstring)."""

REMOVED_IN = "0.3"

BACKBONE_LOAD_OPTIONS: dict[str, Any] = {
    "dtype": str,
    "attn_implementation": str,
    "revision": str,
    "cache_dir": str,
    "local_files_only": bool,
    "token": str | bool,
    "device_map": str | dict,
}
"""`model` keys that go to a backbone's `from_pretrained` (and their types), accepted by the tasks that load one."""


class RecipeError(ValueError):
    """A recipe that cannot run as written: an unknown section or key, a value of the wrong type, a missing file.

    The command line reports it in one line with exit status 2.
    """


def _type_name(hint: Any) -> str:
    """`hint` in words, for messages (`float` -> "a number", `list[str] | None` -> "a list of strings or null")."""
    if hint is Any:
        return "anything"
    if hint is type(None) or hint is None:
        return "null"
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in typing.get_args(hint)]
        return " or ".join(dict.fromkeys(names))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (list, tuple, set, frozenset, Sequence):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        inner = _type_name(args[0]) if args else "anything"
        return "a list" + ("" if inner == "anything" else f" of {_plural(inner)}")
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return "a mapping"
    if hint is bool:
        return "a boolean (true or false)"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in hint)
    if isinstance(hint, type) and issubclass(hint, os.PathLike):
        return "a path"
    return f"a {getattr(hint, '__name__', str(hint))}"


def _plural(name: str) -> str:
    for single, many in (("an integer", "integers"), ("a number", "numbers"), ("a string", "strings")):
        name = name.replace(single, many)
    return name.removeprefix("a ").removeprefix("an ")


class _Mismatch(Exception):
    pass


def _coerce(value: Any, hint: Any) -> Any:
    if hint is Any or isinstance(hint, typing.TypeVar):
        return value
    if hint is type(None) or hint is None:
        if value is None:
            return None
        raise _Mismatch
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None:
            if type(None) in args:
                return None
            raise _Mismatch
        # exact types first, so that "2" stays a string where a string is allowed
        for arg in sorted(args, key=lambda a: 0 if isinstance(a, type) and type(value) is a else 1):
            try:
                return _coerce(value, arg)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is typing.Literal:
        if value in typing.get_args(hint):
            return value
        raise _Mismatch
    if origin is not None:
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        if origin in (dict, Mapping) or (isinstance(origin, type) and issubclass(origin, Mapping)):
            if isinstance(value, dict):
                return value
            raise _Mismatch
        if isinstance(origin, type) and issubclass(origin, (list, tuple, set, frozenset, Sequence)):
            if isinstance(value, (list, tuple)):
                return [_coerce(v, args[0]) for v in value] if args else list(value)
            raise _Mismatch
        if callable(origin) and origin.__module__ == "collections.abc" and origin.__name__ == "Callable":
            if callable(value):
                return value
            raise _Mismatch
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise _Mismatch
    if hint is int:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                try:
                    number = float(value)
                except ValueError:
                    raise _Mismatch from None
                if number.is_integer():
                    return int(number)
        raise _Mismatch
    if hint is float:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, (int, float)):
            return value
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        if isinstance(value, hint):
            return value
        if isinstance(value, str) and value in {m.value for m in hint}:
            return value
        raise _Mismatch
    if isinstance(hint, type):
        if isinstance(value, hint):
            return value
        raise _Mismatch
    return value


def coerce_value(value: Any, hint: Any, where: str) -> Any:
    """`value` checked against the type `hint`, numeric strings (`"1e-4"`) parsed where a number is expected.

    Args:
        value (`Any`):
            The recipe's value.
        hint (`Any`):
            The expected type (`float`, `int | None`, `list[str]`, an `Enum`, `Any`, ...).
        where (`str`):
            The value's dotted name (`method.temperature`), for the message.

    Returns:
        `Any`: the value, parsed where a string stood for a number or a boolean.

    Raises:
        `RecipeError`: `"method.temperature must be a number, got 'abc'."`.
    """
    try:
        return _coerce(value, hint)
    except _Mismatch:
        raise RecipeError(f"{where} must be {_type_name(hint)}, got {value!r}.") from None


def _field_hints(cls: type) -> dict[str, Any]:
    """A dataclass's field types; a field whose annotation cannot be resolved accepts anything."""
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):
        pass
    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        namespace = vars(inspect.getmodule(klass)) if inspect.getmodule(klass) else {}
        for name, annotation in vars(klass).get("__annotations__", {}).items():
            if isinstance(annotation, str):
                try:
                    annotation = eval(annotation, dict(namespace))  # noqa: S307 - a class's own annotation
                except Exception:  # noqa: BLE001 - unresolvable: accept anything
                    annotation = Any
            hints[name] = annotation
    return hints


def schema_of(obj: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Setting name -> type: the `init` fields of a dataclass, or the keyword parameters of a callable.

    Args:
        obj (`type` or `Callable`):
            A dataclass (its field annotations), or a function or class (its signature's annotations;
            unannotated parameters accept anything).
        skip (`tuple[str, ...]`, *optional*, defaults to `()`):
            Names left out.
    """
    if dataclasses.is_dataclass(obj) and isinstance(obj, type):
        hints = _field_hints(obj)
        return {
            f.name: hints.get(f.name, Any) for f in dataclasses.fields(obj) if f.init and f.name not in skip
        }
    fn = obj.__init__ if isinstance(obj, type) else obj
    try:
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError):
        hints = {}
    schema = {}
    for name, param in inspect.signature(fn).parameters.items():
        if name in ("self", "cls", *skip) or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        schema[name] = hints.get(name, Any)
    return schema


def check_section(
    section: Mapping[str, Any] | None,
    schema: Mapping[str, Any],
    name: str,
    task: str | None = None,
    what: str = "key(s)",
) -> dict[str, Any]:
    """A recipe section checked against its schema: unknown keys and values of the wrong type are refused.

    Args:
        section (`Mapping`, *optional*):
            The section (`None` is an empty one).
        schema (`Mapping[str, Any]`):
            Accepted key -> its type ([`schema_of`] builds one from a dataclass or a signature).
        name (`str`):
            The section's name (`model`, `data`, `method`, `args`, `lora`), for messages.
        task (`str`, *optional*):
            The recipe task, for messages.
        what (`str`, *optional*, defaults to `"key(s)"`):
            What the keys are, for the message about unknown ones (`"training argument(s)"`).

    Returns:
        `dict`: the section, with numeric strings parsed where the schema expects numbers.
    """
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise RecipeError(f"The recipe's {name} section must be a mapping of settings, got {section!r}.")
    unknown = sorted(set(section) - set(schema))
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), list(schema), n=1)
            if close:
                hints.append(f"{name}.{key} -> {name}.{close[0]}?")
        where = f" of task {task!r}" if task else ""
        raise RecipeError(
            f"Unknown {what} {unknown} in the {name} section{where}"
            + (f" (did you mean {', '.join(hints)})" if hints else "")
            + f"; accepted keys: {sorted(schema)}."
        )
    return {key: coerce_value(value, schema[key], f"{name}.{key}") for key, value in section.items()}


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
        model_schema (`Mapping[str, Any]`, *optional*):
            The keys the `model` section accepts and their types; `None` leaves the section unchecked.
        data_schema (`Mapping[str, Any]`, *optional*):
            The keys the `data` section accepts and their types; `None` leaves the section unchecked.
        args_classes (`tuple[type, ...]`, *optional*, defaults to `()`):
            The `TrainingArguments` classes the runner builds from `args` (a key is accepted when one of them
            has the field); `()` leaves the section to the runner's [`build_args`].
    """

    name: str
    runner: Callable[[dict[str, Any]], dict[str, Any]]
    method: type | None = None
    legacy_sections: tuple[str, ...] = ()
    description: str = ""
    model_schema: Mapping[str, Any] | None = None
    data_schema: Mapping[str, Any] | None = None
    args_classes: tuple[type, ...] = ()

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
                raise RecipeError(
                    f"Recipe task {self.name!r} takes no method settings, got {sorted(section)}."
                )
            return None
        return read_method(self.method, section, task=self.name)

    def check(self, recipe: dict[str, Any]) -> dict[str, Any]:
        """The recipe's sections checked against the task's schemas (copied): unknown keys and values of the
        wrong type are refused ([`RecipeError`]), numeric strings parsed where numbers are expected.

        Args:
            recipe (`dict`):
                The recipe's sections, after [`normalize_sections`].
        """
        recipe = dict(recipe)
        if self.model_schema is not None and "model" in recipe:
            recipe["model"] = check_section(recipe["model"], self.model_schema, "model", self.name)
        if self.data_schema is not None and "data" in recipe:
            recipe["data"] = check_section(recipe["data"], self.data_schema, "data", self.name)
        if self.method is not None and recipe.get("method"):
            self.read_method(recipe)  # unknown settings, with the task's message
            recipe["method"] = check_section(recipe["method"], schema_of(self.method), "method", self.name)
        if self.args_classes and "args" in recipe:
            schema: dict[str, Any] = {}
            for cls in reversed(self.args_classes):
                schema.update(schema_of(cls))
            recipe["args"] = check_section(
                recipe["args"], schema, "args", self.name, what="training argument(s)"
            )
        if recipe.get("lora"):
            recipe["lora"] = check_section(
                recipe["lora"], schema_of(LoraConfig), "lora", self.name, what="LoRA setting(s)"
            )
        return recipe


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
    raise RecipeError(f"Recipe {str(name_or_path)!r} not found; packaged recipes: {available}.")


def read_recipe_file(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping of a recipe YAML file (an empty file is an empty recipe)."""
    recipe = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(recipe, dict):
        raise RecipeError(f"{path}: a recipe is a mapping with sections {SECTIONS}.")
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
            raise RecipeError(f"Expected an override like --args.learning_rate 1e-4, got {token!r}.")
        key = token[2:]
        if "=" in key:
            key, raw = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(overrides):
                raise RecipeError(f"Override {token} has no value.")
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
                raise RecipeError(f"Cannot override {key}: {part} is not a section.")
        node[parts[-1]] = _parse_value(raw)
    return recipe


def _merge_into(recipe: dict[str, Any], section: str, values: dict[str, Any], origin: str) -> None:
    target = recipe.setdefault(section, {})
    if not isinstance(target, dict):
        raise RecipeError(f"The recipe's {section} section must be a mapping, got {target!r}.")
    clash = sorted(set(target) & set(values))
    if clash:
        raise RecipeError(f"{clash} given both in {origin} and in {section}: keep one.")
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
        raise RecipeError(
            f"{source}: unknown section(s) {unknown}; expected {list(SECTIONS)} for task {task.name!r}."
        )
    for name in task.legacy_sections:
        if name not in recipe:
            continue
        values = recipe.pop(name) or {}
        if not isinstance(values, dict):
            raise RecipeError(f"{source}: the {name} section must be a mapping, got {values!r}.")
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
        raise RecipeError(
            f"Unknown method setting(s) {bad}{where} ({method_cls.__name__}); known settings: {sorted(known)}."
        )
    schema = schema_of(method_cls)
    return method_cls(**{k: coerce_value(v, schema.get(k, Any), f"method.{k}") for k, v in section.items()})


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
        raise RecipeError(
            f"Unknown training argument(s) {bad} ({config_cls.__name__} / TrainingArguments fields)."
        )
    schema = schema_of(config_cls)
    cfg.update({k: coerce_value(v, schema.get(k, Any), f"args.{k}") for k, v in dict(section or {}).items()})
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
        raise RecipeError(f"Unknown LoRA setting(s) {bad} in the lora section (peft.LoraConfig fields).")
    schema = schema_of(LoraConfig)
    section = {k: coerce_value(v, schema.get(k, Any), f"lora.{k}") for k, v in section.items()}
    if task_type is not None:
        section.setdefault("task_type", task_type)
    return LoraConfig(**section)
