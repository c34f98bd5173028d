"""Model cards: Hub metadata + a rendered description, written by ``save_pretrained``/``push_to_hub``."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hf_contrastive.core.utils import resource_dir

logger = logging.getLogger(__name__)

LIBRARY_NAME = "hf-contrastive"
_BASE_TAGS = ("hf-contrastive", "sentence-embeddings", "sentence-similarity", "feature-extraction")


@dataclass
class EvalEntry:
    """One evaluation figure for the card's ``model-index`` (e.g. STS-B test Spearman)."""

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

    Attached to models as ``model.card_info``; loaders fill ``base_model``, trainers fill
    ``datasets``, ``training``, ``citations`` and ``eval_results``.
    """

    model_name: str | None = None
    base_model: str | None = None
    datasets: list[str] = field(default_factory=list)
    license: str | None = None
    language: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    description: str | None = None
    training: dict[str, Any] = field(default_factory=dict)
    eval_results: list[EvalEntry] = field(default_factory=list)
    citations: list[str] = field(default_factory=list)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> ModelCardInfo:
        """Recover the metadata of a card written earlier (``README.md`` in ``folder``)."""
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
    import importlib.metadata as md

    out = {}
    for dist in ("hf-contrastive", "transformers", "torch", "peft", "huggingface_hub"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out


def render_model_card(model: Any, repo_id: str | None = None, load_path: str | None = None) -> ModelCard:
    """Render the card of a [`SentenceEncoder`] (``model_cards/sentence_encoder.md``).

    Args:
        model: the head; its ``config`` and ``card_info`` feed the card.
        repo_id: the Hub repository the card is for; used in the usage snippet.
        load_path: what the snippet loads when there is no ``repo_id`` (the local folder).
    """
    info: ModelCardInfo = getattr(model, "card_info", None) or ModelCardInfo()
    config = model.config
    backbone_type = getattr(config.backbone_config, "model_type", "unknown")
    model_name = info.model_name or (repo_id.split("/")[-1] if repo_id else None)
    if info.eval_results and not model_name:
        model_name = "sentence-encoder"
    tags = list(dict.fromkeys([*_BASE_TAGS, backbone_type, *info.tags]))
    card_data = ModelCardData(
        library_name=LIBRARY_NAME,
        pipeline_tag="sentence-similarity",
        tags=tags,
        base_model=info.base_model,
        datasets=info.datasets or None,
        license=info.license,
        language=info.language or None,
        model_name=model_name,
        eval_results=[e.to_hub() for e in info.eval_results] or None,
    )
    if config.projection_dim is None:
        projection = "none"
    else:
        projection = (
            f"Linear({config.hidden_size} -> {config.projection_dim}) + {config.projection_activation}"
            + (" (training only)" if config.mlp_only_train else "")
        )
    title = model_name or "Sentence encoder"
    description = info.description or (
        f"A sentence encoder made with [hf-contrastive](https://github.com/hf-contrastive/hf-contrastive): "
        f"a `{backbone_type}` backbone with `{config.pooling}` pooling that maps text to "
        f"{config.embedding_dim}-dimensional vectors for semantic similarity, search and clustering."
    )
    citations = list(dict.fromkeys(info.citations))
    return ModelCard.from_template(
        card_data,
        template_path=str(resource_dir("model_cards") / "sentence_encoder.md"),
        title=title,
        description=description,
        backbone_type=backbone_type,
        base_model=info.base_model,
        pooling=config.pooling,
        projection=projection,
        normalize="yes (L2)" if config.normalize else "no",
        embedding_dim=config.embedding_dim,
        max_seq_length=config.max_seq_length or "tokenizer limit",
        similarity_fn=config.similarity_fn,
        prompts=config.prompts,
        load_path=repo_id or load_path or "path/to/this/folder",
        training=info.training,
        eval_rows=info.eval_results,
        versions=_versions(),
        citations=citations,
    )


__all__ = ["ModelCardInfo", "EvalEntry", "render_model_card", "LIBRARY_NAME"]
