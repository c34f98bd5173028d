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
from transformers.utils import PROCESSOR_NAME, ModelOutput, cached_file, logging

from hf_contrastive.core.boundary import corrupt_file_errors
from hf_contrastive.core.hub.card import ModelCardInfo, render_model_card
from hf_contrastive.core.hub.mixin import HubMixin
from hf_contrastive.relation.configuration import RelationClassifierConfig
from hf_contrastive.relation.data import RelationDataCollator, RelationExample, as_examples, mark_words
from hf_contrastive.relation.processing import RelationProcessor

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
    """`Linear(2H, H') -> ReLU -> Dropout -> Linear(H', C)` over concatenated marker states."""

    def __init__(self, in_features: int, hidden: int, num_labels: int, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(in_features, hidden)
        self.activation = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden, num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dropout(self.activation(self.dense(x))))


def _marker_settings(obj: Any) -> dict[str, Any]:
    return {
        "marker_scheme": obj.marker_scheme,
        "entity_types": list(obj.entity_types),
        "default_entity_type": obj.default_entity_type,
    }


def _matches(processor: RelationProcessor, config: RelationClassifierConfig) -> bool:
    return _marker_settings(processor) == _marker_settings(config)


def _check_processor_matches(processor: RelationProcessor, config: RelationClassifierConfig) -> None:
    """Raise `ValueError` when a processor marks differently from what the model was trained with."""
    if not _matches(processor, config):
        raise ValueError(
            f"The processor's marker settings {_marker_settings(processor)} differ from the model config's "
            f"{_marker_settings(config)}; use RelationProcessor.from_config(tokenizer, model.config)."
        )


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


class RelationClassifier(HubMixin, RelationClassifierPreTrainedModel):
    r"""Sentence-level relation classification with entity markers (TKRE fine-tuning head).

    The sentence is marked (`[S:ENTITY] subject [/S:ENTITY] ... [O:ENTITY] object [/O:ENTITY]`), encoded,
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

        self.card_info = ModelCardInfo()
        self.post_init()

    # -- plumbing -----------------------------------------------------------------------------
    def get_input_embeddings(self) -> nn.Module:
        return self.backbone.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.backbone.set_input_embeddings(value)

    @staticmethod
    def add_marker_tokens(tokenizer: Any, config: RelationClassifierConfig) -> int:
        """Add the scheme's marker tokens to `tokenizer` (a tokenizer or a [`RelationProcessor`]; as
        special tokens, never split) and record their ids in `config.marker_token_ids`. Returns how many
        tokens were new."""
        if isinstance(tokenizer, RelationProcessor):
            processor = tokenizer
            _check_processor_matches(processor, config)
        else:
            processor = RelationProcessor.from_config(tokenizer, config)
        added = processor.add_marker_tokens()
        config.marker_token_ids = processor.marker_token_ids
        return len(added)

    @property
    def processor(self) -> RelationProcessor | None:
        """The [`RelationProcessor`] that marks inputs for this model (`None` while it has no tokenizer).

        Built from the config's marker settings and `model.tokenizer`, unless one was set (or loaded
        from a folder holding `processor_config.json`); setting one also sets `model.tokenizer`.
        """
        tokenizer = self.tokenizer
        if tokenizer is None:
            return None
        processor = self.__dict__.get("_processor")
        if processor is None or processor.tokenizer is not tokenizer or not _matches(processor, self.config):
            processor = RelationProcessor.from_config(tokenizer, self.config)
            self.__dict__["_processor"] = processor
        return processor

    @processor.setter
    def processor(self, processor: RelationProcessor | None) -> None:
        if processor is not None:
            if not isinstance(processor, RelationProcessor):
                raise TypeError(f"processor must be a RelationProcessor, got {type(processor).__name__}.")
            _check_processor_matches(processor, self.config)
            self.tokenizer = processor.tokenizer
        self.__dict__["_processor"] = processor

    def collator(self, tokenizer: Any = None, with_labels: bool = True, **kwargs: Any):
        """A [`RelationDataCollator`] that marks with this model's [`processor`] (or with a processor built
        from the config and `tokenizer`, which may also be a [`RelationProcessor`])."""

        if isinstance(tokenizer, RelationProcessor):
            _check_processor_matches(tokenizer, self.config)
            processor = tokenizer
        elif tokenizer is not None and tokenizer is not self.tokenizer:
            processor = RelationProcessor.from_config(tokenizer, self.config)
        else:
            processor = self.processor
        if processor is None:
            raise ValueError("No tokenizer: load the model from a folder that has one, or pass tokenizer=.")
        return RelationDataCollator(
            processor=processor,
            label2id=dict(self.config.label2id) if with_labels else None,
            **kwargs,
        )

    # -- forward ------------------------------------------------------------------------------
    def find_start_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """`[B, 2]` positions of the first subject-start and object-start marker in each row."""
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
                (subject start, object start); found from the marker ids in `input_ids` when omitted.
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
        A sentence-transformers folder works too (its `config.json` and weights are the encoder's).
        `config_kwargs` go to [`RelationClassifierConfig`] (`marker_scheme`, `no_relation_label`, ...).
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
        [`from_backbone`], which then needs `labels=` (or `id2label=`).
        """
        path = os.fspath(pretrained_model_name_or_path)
        config_file = Path(path) / "config.json"
        model_type = None
        if config_file.is_file():
            with corrupt_file_errors(config_file):
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
        processor = kwargs.pop("processor", None)
        with corrupt_file_errors(path):
            model = super().from_pretrained(path, *model_args, **kwargs)
        if processor is None:
            # A folder holding a processor (processor_config.json) restores it, with ``tokenizer`` when given.
            hub = {
                k: kwargs[k]
                for k in ("cache_dir", "revision", "token", "local_files_only", "subfolder")
                if k in kwargs
            }
            saved = cached_file(
                path,
                PROCESSOR_NAME,
                _raise_exceptions_for_missing_entries=False,
                _raise_exceptions_for_connection_errors=False,
                **hub,
            )
            if saved is not None:
                processor = RelationProcessor.from_pretrained(path, tokenizer=tokenizer, **hub)
        if processor is not None:
            model.processor = processor  # checks that it marks as the config says; sets model.tokenizer
        else:
            if tokenizer is None:
                try:
                    tokenizer = AutoTokenizer.from_pretrained(path)
                except (OSError, ValueError):
                    tokenizer = None
            model.tokenizer = tokenizer
        if os.path.isdir(path):
            model.card_info = ModelCardInfo.from_folder(path)
        return model

    # -- model card ------------------------------------------------------------------------------
    # ``save_pretrained`` / ``push_to_hub`` (atomic save with the card, one-commit upload): HubMixin.
    card_template = "relation_classifier.md"
    card_pipeline_tag = "text-classification"
    card_tags = ("relation-extraction", "text-classification")
    card_citations = (MARKER_CITATION,)

    def card_details(self) -> dict[str, Any]:
        """Settings of the head for `model_cards/relation_classifier.md`."""
        config = self.config
        backbone_type = getattr(config.backbone_config, "model_type", "unknown")
        markers = {
            "entity_marker": "`[E1] subject [/E1]` ... `[E2] object [/E2]`",
            "typed_entity_marker": "`[S:TYPE] subject [/S:TYPE]` ... `[O:TYPE] object [/O:TYPE]`",
            "typed_entity_marker_punct": "`@ * type * subject @` ... `# ^ type ^ object #`",
        }[config.marker_scheme]
        hidden = config.classifier_hidden_size or config.hidden_size
        example = RelationExample(
            "The company fabricates plastic chairs .".split(), subject=(1, 2), object=(4, 5)
        )
        marked, _ = mark_words(example, config.marker_scheme, config.entity_types, config.default_entity_type)
        return {
            "title": "Relation classifier",
            # The plain-transformers snippet finds the markers by token id: schemes with marker tokens only.
            "marked_example": " ".join(marked) if config.marker_tokens else None,
            "description": (
                "A relation classifier made with [hf-contrastive](https://github.com/hf-contrastive/hf-contrastive): "
                f"a `{backbone_type}` encoder reads a sentence with its two entities marked, and an MLP over the "
                f"subject-start and object-start marker states picks one of {config.num_labels} relations."
            ),
            "backbone_type": backbone_type,
            "marker_scheme": config.marker_scheme,
            "markers": markers,
            "head": f"Linear({2 * config.hidden_size} -> {hidden}) -> ReLU -> Dropout({config.classifier_dropout}) "
            f"-> Linear({hidden} -> {config.num_labels})",
            "labels": [config.id2label[i] for i in sorted(config.id2label)],
            "no_relation_label": config.no_relation_label,
            "max_seq_length": config.max_seq_length,
        }


# The card of a [`RelationClassifier`] (`model_cards/relation_classifier.md`); kept under its 0.1 name.
render_relation_card = render_model_card


__all__ = [
    "RelationClassifier",
    "RelationClassifierOutput",
    "RelationClassifierPreTrainedModel",
    "RelationClassificationHead",
    "render_relation_card",
]
