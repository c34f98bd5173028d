"""Model cards: Hub metadata + a rendered description, written by `save_pretrained`/`push_to_hub`."""

from __future__ import annotations

import importlib.metadata as md
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hf_contrastive.core.utils import resource_dir

logger = logging.getLogger(__name__)

LIBRARY_NAME = "hf-contrastive"
# Tags every card of a family carries; a card read back does not count them as the user's own.
_BASE_TAGS = (
    "hf-contrastive",
    "sentence-embeddings",
    "sentence-similarity",
    "feature-extraction",
    "relation-extraction",
    "text-classification",
    "dense-retrieval",
    "reranker",
    "text-ranking",
    "text-generation",
    "causal-lm",
)


@dataclass
class EvalEntry:
    """One evaluation figure for the card's `model-index` (e.g. STS-B test Spearman)."""

    task_type: str
    dataset_name: str
    dataset_type: str
    metric_type: str
    metric_value: float
    dataset_split: str | None = None
    metric_name: str | None = None
    task_name: str | None = None

    def to_hub(self) -> EvalResult:
        return EvalResult(
            task_type=self.task_type,
            task_name=self.task_name,
            dataset_type=self.dataset_type,
            dataset_name=self.dataset_name,
            dataset_split=self.dataset_split,
            metric_type=self.metric_type,
            metric_name=self.metric_name,
            metric_value=float(self.metric_value),
        )


@dataclass
class ModelCardInfo:
    """What a card says beyond the config: provenance, data, training, results.

    Attached to models as `model.card_info`; loaders fill `base_model`, trainers fill
    `datasets`, `training`, `citations` and `eval_results`.
    """

    model_name: str | None = None
    base_model: str | None = None
    datasets: list[str] = field(default_factory=list)
    license: str | None = None
    language: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    pipeline_tag: str | None = None
    description: str | None = None
    training: dict[str, Any] = field(default_factory=dict)
    eval_results: list[EvalEntry] = field(default_factory=list)
    citations: list[str] = field(default_factory=list)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> ModelCardInfo:
        """Recover the metadata of a card written earlier (`README.md` in `folder`)."""
        path = Path(folder) / "README.md"
        if not path.is_file():
            return cls()
        try:
            data = ModelCard.load(path).data
        except Exception as err:  # a hand-edited card with broken YAML must not block loading
            logger.warning("Ignoring unreadable model card %s: %s", path, err)
            return cls()
        info = cls(
            model_name=data.get("model_name"),
            base_model=data.get("base_model") if isinstance(data.get("base_model"), str) else None,
            datasets=list(data.get("datasets") or []),
            license=data.get("license"),
            language=list(_as_list(data.get("language"))),
            tags=[t for t in (data.get("tags") or []) if t not in _BASE_TAGS],
        )
        for r in data.get("eval_results") or []:
            info.eval_results.append(
                EvalEntry(
                    task_type=r.task_type,
                    task_name=r.task_name,
                    dataset_name=r.dataset_name,
                    dataset_type=r.dataset_type,
                    dataset_split=r.dataset_split,
                    metric_type=r.metric_type,
                    metric_name=r.metric_name,
                    metric_value=r.metric_value,
                )
            )
        return info

    def add_result(self, entry: EvalEntry) -> None:
        """Add or replace (same dataset, split and metric) an evaluation figure."""
        key = (entry.dataset_type, entry.dataset_split, entry.metric_type)
        self.eval_results = [
            e for e in self.eval_results if (e.dataset_type, e.dataset_split, e.metric_type) != key
        ]
        self.eval_results.append(entry)


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("hf-contrastive", "transformers", "torch", "peft", "huggingface_hub"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out


def _template_environment() -> jinja2.Environment:
    # A loader (not a bare template string) so that family templates can include the shared sections.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resource_dir("model_cards"))),
        keep_trailing_newline=True,
        autoescape=False,
    )


def card_template_names() -> list[str]:
    """The family templates shipped in `model_cards/` (partials starting with `_` left out)."""
    folder = resource_dir("model_cards")
    return sorted(p.name for p in folder.glob("*.md") if not p.name.startswith("_"))


def render_card(
    template: str,
    info: ModelCardInfo | None = None,
    *,
    details: dict[str, Any] | None = None,
    pipeline_tag: str | None = None,
    tags: Sequence[str] = (),
    citations: Sequence[str] = (),
    repo_id: str | None = None,
    load_path: str | os.PathLike | None = None,
    title: str | None = None,
    description: str | None = None,
) -> ModelCard:
    """Render one family template of `model_cards/` into a [`huggingface_hub.ModelCard`].

    Every card gets the same Hub metadata (`library_name: hf-contrastive`, `base_model`, `datasets`,
    `tags`, `license`, `pipeline_tag` and a `model-index` when `info` holds results) and the same
    template variables: `title`, `description`, `base_model`, `load_path` (what the usage snippets
    load), `training`, `eval_rows`, `versions` and `citations`; `details` adds the family's own.

    Args:
        template (`str`): file name in `model_cards/` (e.g. `"reranker.md"`).
        info ([`ModelCardInfo`], *optional*): provenance, data, training and results.
        details (`dict`, *optional*): the family's template variables (settings table, snippet inputs...).
        pipeline_tag (`str`, *optional*): the default pipeline tag; `info.pipeline_tag` wins when set.
        tags (`Sequence[str]`): the family's tags, placed before `info.tags`.
        citations (`Sequence[str]`): BibTeX entries of the method, placed after `info.citations`.
        repo_id (`str`, *optional*): the Hub repository the card is for; the snippets load it.
        load_path (`str`, *optional*): what the snippets load when there is no `repo_id` (a local folder).
        title / description (`str`, *optional*): defaults when `info` has no `model_name` / `description`.
    """

    info = info if info is not None else ModelCardInfo()
    details = dict(details or {})
    model_name = info.model_name or (repo_id.split("/")[-1] if repo_id else None)
    if info.eval_results and not model_name:
        # The Hub's model-index needs a name.
        model_name = Path(template).stem.replace("_", "-")
    card_data = ModelCardData(
        library_name=LIBRARY_NAME,
        pipeline_tag=info.pipeline_tag or pipeline_tag,
        tags=list(dict.fromkeys([LIBRARY_NAME, *tags, *info.tags])),
        base_model=info.base_model,
        datasets=info.datasets or None,
        license=info.license,
        language=info.language or None,
        model_name=model_name,
        eval_results=[e.to_hub() for e in info.eval_results] or None,
    )
    context = {
        "title": model_name or title or "Model",
        "description": info.description or description or "",
        "base_model": info.base_model,
        "datasets": info.datasets,
        "load_path": repo_id or (os.fspath(load_path) if load_path is not None else "path/to/this/folder"),
        "training": info.training,
        "eval_rows": info.eval_results,
        "versions": _versions(),
        "citations": list(dict.fromkeys(c.strip() for c in [*info.citations, *citations] if c and c.strip())),
    }
    context.update(details)
    text = _template_environment().get_template(template).render(card_data=card_data.to_yaml(), **context)
    return ModelCard(text)


def render_model_card(model: Any, repo_id: str | None = None, load_path: str | None = None) -> ModelCard:
    """Render the card of a head that uses [`~hf_contrastive.core.hub.mixin.HubMixin`].

    Args:
        model (`Any`): the head; its `card_template`, `card_info` and `card_details()` feed the card.
        repo_id (`str | None`, *optional*): the Hub repository the card is for; used in the usage snippets.
        load_path (`str | None`, *optional*): what the snippets load when there is no `repo_id` (the local folder).
    """

    model_card = getattr(model, "model_card", None)
    if not callable(model_card):
        raise TypeError(
            f"{type(model).__name__} has no model card hooks; use save_with_card(...) for plain models and adapters."
        )
    return model_card(repo_id=repo_id, load_path=load_path)


__all__ = [
    "ModelCardInfo",
    "EvalEntry",
    "render_card",
    "render_model_card",
    "card_template_names",
    "LIBRARY_NAME",
]
