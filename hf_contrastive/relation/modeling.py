"""Relation classifier: any `AutoModel` encoder + entity markers + subject/object start-state MLP (TKRE)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel
from transformers.utils import ModelOutput, logging

from hf_contrastive.relation.configuration import RelationClassifierConfig

logger = logging.get_logger(__name__)

MARKER_CITATION = """@inproceedings{zhou-chen-2022-improved,
  title     = {An Improved Baseline for Sentence-level Relation Extraction},
  author    = {Zhou, Wenxuan and Chen, Muhao},
  booktitle = {Proceedings of AACL-IJCNLP 2022},
  year      = {2022}
}"""


@dataclass
class RelationClassifierOutput(ModelOutput):
    """Output of [`RelationClassifier`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): cross-entropy, when `labels` are given.
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`): class scores.
        entity_states (`torch.FloatTensor` of shape `(batch_size, 2 * hidden_size)`): subject-start and
            object-start marker states, concatenated (the head's input).
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, seq_len, hidden_size)`).
        hidden_states / attentions: as the backbone returns them, when requested.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    entity_states: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class RelationClassificationHead(nn.Module):
    """``Linear(2H, H') -> ReLU -> Dropout -> Linear(H', C)`` over concatenated marker states."""

    def __init__(self, in_features: int, hidden: int, num_labels: int, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(in_features, hidden)
        self.activation = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden, num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dropout(self.activation(self.dense(x))))


class RelationClassifierPreTrainedModel(PreTrainedModel):
    config_class = RelationClassifierConfig
    base_model_prefix = "backbone"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        # Only the head's layers: the backbone initialises (or loads) itself.
        if isinstance(module, RelationClassificationHead):
            std = getattr(self.config.backbone_config, "initializer_range", 0.02)
            try:
                from transformers import initialization as init
            except ImportError:  # older 5.x
                init = nn.init
            for layer in (module.dense, module.out_proj):
                init.normal_(layer.weight, mean=0.0, std=std)
                init.zeros_(layer.bias)


class RelationClassifier(RelationClassifierPreTrainedModel):
    r"""Sentence-level relation classification with entity markers (TKRE fine-tuning head).

    The sentence is marked (``[S:ENTITY] subject [/S:ENTITY] ... [O:ENTITY] object [/O:ENTITY]``), encoded,
    and the states of the subject-start and object-start markers are concatenated and classified by
    an MLP. The markers are new tokens added to the tokenizer, which is saved with the model.

    Example::

        >>> from hf_contrastive import RelationClassifier
        >>> model = RelationClassifier.from_pretrained(
        ...     "bert-base-uncased", labels=["Cause-Effect(e1,e2)", "Other"], no_relation_label="Other")
        >>> batch = model.collator()([example])   # RelationExample(s)
        >>> model(**batch).logits.shape
        torch.Size([1, 2])
    """

    def __init__(self, config: RelationClassifierConfig, backbone: PreTrainedModel | None = None):
        super().__init__(config)
        if config.backbone_config is None:
            raise ValueError(
                "RelationClassifierConfig.backbone_config is required to build a RelationClassifier."
            )
        if not config.id2label:
            raise ValueError(
                "RelationClassifierConfig needs labels: pass id2label (or labels= to from_pretrained)."
            )
        self.backbone = backbone if backbone is not None else AutoModel.from_config(config.backbone_config)
        if self.backbone.config._attn_implementation is None:
            # The composite config resets the sub-config's attention implementation; a backbone left
            # without one builds wrong attention masks.
            self.backbone.config._attn_implementation = (
                "sdpa" if getattr(self.backbone, "_supports_sdpa", False) else "eager"
            )
        hidden = config.hidden_size
        self.classifier = RelationClassificationHead(
            2 * hidden, config.classifier_hidden_size or hidden, config.num_labels, config.classifier_dropout
        )
        self.tokenizer = None  # attached by from_pretrained / from_backbone; used by collator() and predict()
        from hf_contrastive.core.hub.card import ModelCardInfo

        self.card_info = ModelCardInfo()
        self.post_init()

    # -- plumbing -----------------------------------------------------------------------------
    def get_input_embeddings(self) -> nn.Module:
        return self.backbone.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.backbone.set_input_embeddings(value)

    @staticmethod
    def add_marker_tokens(tokenizer: Any, config: RelationClassifierConfig) -> int:
        """Add the scheme's marker tokens to ``tokenizer`` (as special tokens, never split) and record
        their ids in ``config.marker_token_ids``. Returns how many tokens were new."""
        markers = config.marker_tokens
        added = tokenizer.add_tokens(markers, special_tokens=True) if markers else 0
        config.marker_token_ids = {m: int(tokenizer.convert_tokens_to_ids(m)) for m in markers}
        return int(added)

    def collator(self, tokenizer: Any = None, with_labels: bool = True, **kwargs: Any):
        """A [`RelationDataCollator`] set up from this model's config and tokenizer."""
        from hf_contrastive.relation.data import RelationDataCollator

        tokenizer = tokenizer or self.tokenizer
        if tokenizer is None:
            raise ValueError("No tokenizer: load the model from a folder that has one, or pass tokenizer=.")
        kwargs.setdefault("max_length", self.config.max_seq_length)
        return RelationDataCollator(
            tokenizer,
            marker_scheme=self.config.marker_scheme,
            entity_types=self.config.entity_types,
            default_entity_type=self.config.default_entity_type,
            label2id=dict(self.config.label2id) if with_labels else None,
            **kwargs,
        )

    # -- forward ------------------------------------------------------------------------------
    def find_start_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B, 2]`` positions of the first subject-start and object-start marker in each row."""
        subj_ids, obj_ids = self.config.start_marker_ids
        if not subj_ids or not obj_ids:
            raise ValueError(
                "Cannot find marker positions: pass entity_positions (the collator makes them); the "
                f"{self.config.marker_scheme!r} scheme has no marker token ids in the config."
            )
        out = []
        for ids in (subj_ids, obj_ids):
            hit = torch.isin(input_ids, torch.tensor(ids, device=input_ids.device))
            missing = (~hit.any(dim=1)).nonzero().flatten().tolist()
            if missing:
                raise ValueError(
                    f"Rows {missing} of input_ids have no {'subject' if ids is subj_ids else 'object'} marker."
                )
            out.append(hit.int().argmax(dim=1))
        return torch.stack(out, dim=1)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        entity_positions: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> RelationClassifierOutput | tuple:
        r"""Classify the relation between the marked entities.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, seq_len)`): marked, tokenised sentences.
            attention_mask (`torch.Tensor` of shape `(batch_size, seq_len)`, *optional*).
            entity_positions (`torch.LongTensor` of shape `(batch_size, 4)` or `(batch_size, 2)`, *optional*):
                token positions of (subject start, subject end, object start, object end) markers, or of
                (subject start, object start); found from the marker ids in ``input_ids`` when omitted.
            labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*): class indices; gives `loss`.
        Returns:
            [`RelationClassifierOutput`] with `logits` of shape `(batch_size, num_labels)`.
        """
        if input_ids is None and inputs_embeds is None:
            raise ValueError("RelationClassifier.forward needs input_ids or inputs_embeds.")
        for key in ("num_items_in_batch", "return_loss"):
            kwargs.pop(key, None)
        if entity_positions is None:
            if input_ids is None:
                raise ValueError("With inputs_embeds, pass entity_positions.")
            starts = self.find_start_positions(input_ids)
        elif entity_positions.dim() == 2 and entity_positions.shape[1] == 4:
            starts = entity_positions[:, [0, 2]]
        elif entity_positions.dim() == 2 and entity_positions.shape[1] == 2:
            starts = entity_positions
        else:
            raise ValueError(
                f"entity_positions must have shape [batch, 4] or [batch, 2], got {tuple(entity_positions.shape)}."
            )
        inputs = {
            k: v
            for k, v in (
                ("input_ids", input_ids),
                ("token_type_ids", token_type_ids),
                ("inputs_embeds", inputs_embeds),
            )
            if v is not None
        }
        out = self.backbone(
            **inputs,
            attention_mask=attention_mask,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
            **kwargs,
        )
        last = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        rows = torch.arange(last.shape[0], device=last.device)
        states = torch.cat([last[rows, starts[:, 0]], last[rows, starts[:, 1]]], dim=-1)
        logits = self.classifier(states)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float(), labels.to(logits.device))
        output = RelationClassifierOutput(
            loss=loss,
            logits=logits,
            entity_states=states,
            last_hidden_state=last,
            hidden_states=getattr(out, "hidden_states", None),
            attentions=getattr(out, "attentions", None),
        )
        if return_dict is False:
            return output.to_tuple()
        return output

    @torch.no_grad()
    def predict(
        self, examples: Sequence[Any], batch_size: int = 64, return_scores: bool = False
    ) -> list[str] | tuple[list[str], torch.Tensor]:
        """Labels for a list of [`RelationExample`]s (or dicts), in inference mode and in batches."""
        collate = self.collator(with_labels=False)
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        from hf_contrastive.relation.data import as_examples

        examples = as_examples(examples)
        # Longest first, so each batch pads little; results go back to the input order.
        order = sorted(range(len(examples)), key=lambda i: -len(examples[i].tokens))
        probs = torch.zeros(len(examples), self.config.num_labels)
        try:
            with torch.inference_mode():
                for start in range(0, len(order), batch_size):
                    idx = order[start : start + batch_size]
                    batch = collate([examples[i] for i in idx])
                    batch = {k: v.to(device) for k, v in batch.items()}
                    probs[idx] = self(**batch).logits.float().softmax(-1).cpu()
        finally:
            self.train(was_training)
        labels = [self.config.id2label[int(i)] for i in probs.argmax(-1)]
        return (labels, probs) if return_scores else labels

    # -- building, loading, saving ------------------------------------------------------------
    @classmethod
    def from_backbone(
        cls,
        backbone: str | os.PathLike | PreTrainedModel,
        labels: Sequence[str],
        tokenizer: Any = None,
        **config_kwargs: Any,
    ) -> RelationClassifier:
        """Build a classifier over an encoder (a path, Hub id or loaded model) with a fresh head.

        The scheme's markers are added to the tokenizer and the embedding matrix grows to match.
        A sentence-transformers folder works too (its ``config.json`` and weights are the encoder's).
        ``config_kwargs`` go to [`RelationClassifierConfig`] (``marker_scheme``, ``no_relation_label``, ...).
        """
        labels = list(labels)
        if not labels or len(set(labels)) != len(labels):
            raise ValueError(f"labels must be a non-empty list of distinct names, got {labels!r}.")
        if isinstance(backbone, (str, os.PathLike)):
            source = os.fspath(backbone)
            if tokenizer is None:
                tokenizer = AutoTokenizer.from_pretrained(source)
            backbone_model = AutoModel.from_pretrained(source)
        else:
            source = getattr(backbone.config, "_name_or_path", None)
            backbone_model = backbone
        if tokenizer is None:
            raise ValueError("from_backbone with a loaded model needs tokenizer=.")
        config = RelationClassifierConfig(
            backbone_config=backbone_model.config,
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            **config_kwargs,
        )
        cls.add_marker_tokens(tokenizer, config)
        if len(tokenizer) > backbone_model.get_input_embeddings().num_embeddings:
            backbone_model.resize_token_embeddings(len(tokenizer))
        config.backbone_config = backbone_model.config
        model = cls(config, backbone=backbone_model)
        model.tokenizer = tokenizer
        if source and not os.path.isdir(source):
            model.card_info.base_model = source  # a Hub id: the card links to it
        return model

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, *model_args: Any, **kwargs: Any
    ):
        """Load a saved classifier, or start one from a plain encoder.

        A folder saved by this class loads as is (with its tokenizer and card metadata). Any other
        model (a backbone folder, a sentence-transformers folder, a Hub id) goes through
        [`from_backbone`], which then needs ``labels=`` (or ``id2label=``).
        """
        path = os.fspath(pretrained_model_name_or_path)
        config_file = Path(path) / "config.json"
        model_type = None
        if config_file.is_file():
            model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
        else:
            try:
                model_type = AutoConfig.from_pretrained(path).model_type
            except Exception:  # an unreachable Hub id: let the loader below raise its own error
                model_type = None
        if model_type != RelationClassifierConfig.model_type:
            labels = kwargs.pop("labels", None)
            if labels is None and "id2label" in kwargs:
                id2label = kwargs.pop("id2label")
                labels = [id2label[i] for i in sorted(id2label, key=int)]
            if labels is None:
                raise ValueError(
                    f"{path} is not a saved RelationClassifier (model_type {model_type!r}); pass labels=[...] "
                    "to start a classifier over this encoder."
                )
            return cls.from_backbone(path, labels, tokenizer=kwargs.pop("tokenizer", None), **kwargs)
        tokenizer = kwargs.pop("tokenizer", None)
        model = super().from_pretrained(path, *model_args, **kwargs)
        if tokenizer is None:
            try:
                tokenizer = AutoTokenizer.from_pretrained(path)
            except (OSError, ValueError):
                tokenizer = None
        model.tokenizer = tokenizer
        if os.path.isdir(path):
            from hf_contrastive.core.hub.card import ModelCardInfo

            model.card_info = ModelCardInfo.from_folder(path)
        return model

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *args: Any,
        push_to_hub: bool = False,
        write_card: bool = True,
        repo_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Save weights (safetensors), config, tokenizer (with its markers) and a model card, atomically.

        Everything is written to a temporary folder next to ``save_directory`` and moved into place
        only once complete. ``push_to_hub=True`` then uploads the folder.
        """
        from hf_contrastive.core.hub.push import save_folder_with_card

        parent_save = super().save_pretrained  # weights + config, into the temporary folder
        save_folder_with_card(
            self,
            save_directory,
            lambda tmp, **kw: parent_save(tmp, *args, **kw),
            render_relation_card if write_card else None,
            push_to_hub=push_to_hub,
            repo_id=repo_id,
            **kwargs,
        )

    def push_to_hub(self, repo_id: str, **kwargs: Any):
        """Upload weights, config, tokenizer and the rendered model card to ``repo_id``."""
        from hf_contrastive.core.hub.push import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)


def render_relation_card(model: RelationClassifier, repo_id: str | None = None, load_path: str | None = None):
    """Render ``model_cards/relation_classifier.md`` for a [`RelationClassifier`]."""
    from huggingface_hub import ModelCard, ModelCardData

    from hf_contrastive.core.hub.card import LIBRARY_NAME, ModelCardInfo, _versions
    from hf_contrastive.core.utils import resource_dir

    info: ModelCardInfo = getattr(model, "card_info", None) or ModelCardInfo()
    config = model.config
    backbone_type = getattr(config.backbone_config, "model_type", "unknown")
    model_name = info.model_name or (repo_id.split("/")[-1] if repo_id else None)
    if info.eval_results and not model_name:
        model_name = "relation-classifier"
    base_tags = ["hf-contrastive", "relation-extraction", "text-classification"]
    card_data = ModelCardData(
        library_name=LIBRARY_NAME,
        pipeline_tag="text-classification",
        tags=list(dict.fromkeys([*base_tags, backbone_type, *info.tags])),
        base_model=info.base_model,
        datasets=info.datasets or None,
        license=info.license,
        language=info.language or None,
        model_name=model_name,
        eval_results=[e.to_hub() for e in info.eval_results] or None,
    )
    markers = {
        "entity_marker": "`[E1] subject [/E1]` ... `[E2] object [/E2]`",
        "typed_entity_marker": "`[S:TYPE] subject [/S:TYPE]` ... `[O:TYPE] object [/O:TYPE]`",
        "typed_entity_marker_punct": "`@ * type * subject @` ... `# ^ type ^ object #`",
    }[config.marker_scheme]
    hidden = config.classifier_hidden_size or config.hidden_size
    description = info.description or (
        "A relation classifier made with [hf-contrastive](https://github.com/hf-contrastive/hf-contrastive): "
        f"a `{backbone_type}` encoder reads a sentence with its two entities marked, and an MLP over the "
        f"subject-start and object-start marker states picks one of {config.num_labels} relations."
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(resource_dir("model_cards") / "relation_classifier.md"),
        title=model_name or "Relation classifier",
        description=description,
        backbone_type=backbone_type,
        base_model=info.base_model,
        marker_scheme=config.marker_scheme,
        markers=markers,
        head=f"Linear({2 * config.hidden_size} -> {hidden}) -> ReLU -> Dropout({config.classifier_dropout}) "
        f"-> Linear({hidden} -> {config.num_labels})",
        labels=[config.id2label[i] for i in sorted(config.id2label)],
        no_relation_label=config.no_relation_label,
        max_seq_length=config.max_seq_length,
        load_path=repo_id or load_path or "path/to/this/folder",
        training=info.training,
        eval_rows=info.eval_results,
        versions=_versions(),
        citations=list(dict.fromkeys([*info.citations, MARKER_CITATION])),
    )


__all__ = [
    "RelationClassifier",
    "RelationClassifierOutput",
    "RelationClassifierPreTrainedModel",
    "RelationClassificationHead",
    "render_relation_card",
]
