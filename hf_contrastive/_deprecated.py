"""Import aliases for the module paths of release 0.1 (one folder per layer), kept for one release.

`hf_contrastive.modeling`, `hf_contrastive.losses`, `hf_contrastive.data.augment`, ... moved into the
core and the wings (see the README's layout). Importing an old path still works: it returns the new
module (or, for a former package that now spans several wings, a module holding the same public names)
and emits one `FutureWarning` naming the new home.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings

REMOVED_IN = "0.3"

# Old module -> its new home (the same module under a new name).
MOVED: dict[str, str] = {
    "hf_contrastive.utils": "hf_contrastive.core.utils",
    "hf_contrastive.distributed": "hf_contrastive.core.distributed",
    "hf_contrastive.losses": "hf_contrastive.core.losses",
    "hf_contrastive.losses.base": "hf_contrastive.core.losses.base",
    "hf_contrastive.losses.cosent": "hf_contrastive.core.losses.cosent",
    "hf_contrastive.losses.gradcache": "hf_contrastive.core.losses.gradcache",
    "hf_contrastive.losses.infonce": "hf_contrastive.core.losses.infonce",
    "hf_contrastive.losses.moco": "hf_contrastive.core.losses.moco",
    "hf_contrastive.losses.multicsr": "hf_contrastive.core.losses.multicsr",
    "hf_contrastive.losses.regression": "hf_contrastive.core.losses.regression",
    "hf_contrastive.losses.simcse": "hf_contrastive.core.losses.simcse",
    "hf_contrastive.hub": "hf_contrastive.core.hub",
    "hf_contrastive.hub.card": "hf_contrastive.core.hub.card",
    "hf_contrastive.hub.push": "hf_contrastive.core.hub.push",
    "hf_contrastive.trainers.momentum": "hf_contrastive.core.momentum",
    "hf_contrastive.generation._smollm2": "hf_contrastive.core.smollm2",
    "hf_contrastive.data.columns": "hf_contrastive.core.data.columns",
    "hf_contrastive.data.collator": "hf_contrastive.core.data.collator",
    "hf_contrastive.data.samplers": "hf_contrastive.core.data.samplers",
    "hf_contrastive.data.loaders": "hf_contrastive.core.data.loaders",
    "hf_contrastive.data.mining": "hf_contrastive.retrieval.mining",
    "hf_contrastive.data.augment": "hf_contrastive.retrieval.augment",
    "hf_contrastive.data.spans": "hf_contrastive.faithfulness.spans",
    "hf_contrastive.data.annotation": "hf_contrastive.faithfulness.annotation",
    "hf_contrastive.data.relation": "hf_contrastive.relation.data",
    "hf_contrastive.data.relation_knowledge": "hf_contrastive.relation.knowledge",
    "hf_contrastive.data.mslm": "hf_contrastive.relation.mslm",
    "hf_contrastive.modeling.configuration_sentence_encoder": "hf_contrastive.embeddings.configuration",
    "hf_contrastive.modeling.modeling_sentence_encoder": "hf_contrastive.embeddings.modeling",
    "hf_contrastive.modeling.pooling": "hf_contrastive.embeddings.pooling",
    "hf_contrastive.modeling.loading": "hf_contrastive.embeddings.loading",
    "hf_contrastive.modeling.bi_encoder": "hf_contrastive.retrieval.bi_encoder",
    "hf_contrastive.modeling.configuration_relation": "hf_contrastive.relation.configuration",
    "hf_contrastive.modeling.modeling_relation": "hf_contrastive.relation.modeling",
    "hf_contrastive.evaluation.sts": "hf_contrastive.embeddings.sts",
    "hf_contrastive.evaluation.retrieval": "hf_contrastive.retrieval.evaluation",
    "hf_contrastive.evaluation.decoding": "hf_contrastive.generation.metrics",
    "hf_contrastive.evaluation.faithfulness": "hf_contrastive.faithfulness.evaluation",
    "hf_contrastive.evaluation.relation": "hf_contrastive.relation.scoring",
    "hf_contrastive.rerankers": "hf_contrastive.retrieval.rerankers",
    "hf_contrastive.rerankers.configuration": "hf_contrastive.retrieval.rerankers.configuration",
    "hf_contrastive.rerankers.evaluation": "hf_contrastive.retrieval.rerankers.evaluation",
    "hf_contrastive.rerankers.losses": "hf_contrastive.retrieval.rerankers.losses",
    "hf_contrastive.rerankers.modeling": "hf_contrastive.retrieval.rerankers.modeling",
    "hf_contrastive.rerankers.trainer": "hf_contrastive.retrieval.rerankers.trainer",
    "hf_contrastive.rerankers.recipes": "hf_contrastive.retrieval.recipes",
    "hf_contrastive.arithmetic": "hf_contrastive.faithfulness.arithmetic",
    "hf_contrastive.arithmetic.lora": "hf_contrastive.faithfulness.arithmetic.lora",
    "hf_contrastive.arithmetic.negation": "hf_contrastive.faithfulness.arithmetic.negation",
    "hf_contrastive.arithmetic.task_vectors": "hf_contrastive.faithfulness.arithmetic.task_vectors",
    "hf_contrastive.trainers.contrastive": "hf_contrastive.embeddings.trainer",
    "hf_contrastive.trainers.simctg": "hf_contrastive.generation.simctg",
    "hf_contrastive.trainers.span_unlikelihood": "hf_contrastive.faithfulness.trainer",
    "hf_contrastive.trainers.tkre": "hf_contrastive.relation.tkre",
    "hf_contrastive.trainers.recipes": "hf_contrastive.recipes",
    "hf_contrastive.trainers.retrieval": "hf_contrastive.retrieval.recipes",
}

# Former packages whose public names now live in several wings.
SPLIT: dict[str, tuple[str, ...]] = {
    "hf_contrastive.data": (
        "hf_contrastive.core.data",
        "hf_contrastive.retrieval.mining",
        "hf_contrastive.retrieval.augment",
        "hf_contrastive.relation.data",
        "hf_contrastive.relation.mslm",
        "hf_contrastive.relation.knowledge",
        "hf_contrastive.faithfulness.annotation",
        "hf_contrastive.faithfulness.spans",
    ),
    "hf_contrastive.modeling": (
        "hf_contrastive.embeddings",
        "hf_contrastive.retrieval.bi_encoder",
        "hf_contrastive.relation.configuration",
        "hf_contrastive.relation.modeling",
    ),
    "hf_contrastive.evaluation": (
        "hf_contrastive.embeddings.sts",
        "hf_contrastive.retrieval.evaluation",
        "hf_contrastive.generation.metrics",
        "hf_contrastive.faithfulness.evaluation",
        "hf_contrastive.relation.scoring",
    ),
    "hf_contrastive.trainers": (
        "hf_contrastive.embeddings.trainer",
        "hf_contrastive.generation.simctg",
        "hf_contrastive.faithfulness.trainer",
        "hf_contrastive.relation.tkre",
    ),
}


def _warn(old: str, new: str) -> None:
    warnings.warn(
        f"`{old}` moved to `{new}`; the old path is an alias that will be removed in hf-contrastive "
        f"{REMOVED_IN}.",
        FutureWarning,
        stacklevel=3,
    )


def _public(module: types.ModuleType) -> dict[str, object]:
    names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
    return {n: getattr(module, n) for n in names if hasattr(module, n)}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, fullname: str) -> None:
        self.fullname = fullname

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        name = self.fullname
        if name in MOVED:
            _warn(name, MOVED[name])
            return importlib.import_module(MOVED[name])
        homes = SPLIT[name]
        _warn(name, " / ".join(homes))
        module = types.ModuleType(name, f"Deprecated alias of {', '.join(homes)}.")
        module.__path__ = []  # a package: `hf_contrastive.data.augment` resolves below it
        for home in homes:
            vars(module).update(_public(importlib.import_module(home)))
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED or fullname in SPLIT:
            return importlib.machinery.ModuleSpec(
                fullname, _AliasLoader(fullname), is_package=fullname in SPLIT
            )
        return None


def package_attribute(name: str) -> types.ModuleType:
    """`hf_contrastive.<name>` for a former top-level module or package (`hf_contrastive.losses`)."""
    full = f"hf_contrastive.{name}"
    if full in MOVED or full in SPLIT:
        return importlib.import_module(full)
    raise AttributeError(f"module 'hf_contrastive' has no attribute {name!r}")


def install() -> None:
    """Put the alias finder first on `sys.meta_path` (once).

    First, not last: below an aliased package such as `hf_contrastive.arithmetic` (which is the module
    `hf_contrastive.faithfulness.arithmetic`, with its real `__path__`) the path finder would otherwise load
    `lora.py` a second time as a new module `hf_contrastive.arithmetic.lora`, with classes of its own.
    """
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())
