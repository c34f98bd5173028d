"""Configuration of the relation-classification head (entity markers + start-state MLP)."""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PretrainedConfig

from hf_contrastive.core.configuration import backbone_hidden_size
from hf_contrastive.relation.data import MARKER_SCHEMES, marker_tokens


class RelationClassifierConfig(PretrainedConfig):
    r"""Configuration of [`RelationClassifier`]: a backbone, the entity-marker scheme and the head.

    The head follows TKRE and Zhou and Chen (2022): the states of the subject-start and object-start
    markers are concatenated and classified by `Linear(2H, H') -> ReLU -> Dropout -> Linear(H', C)`.
    Labels live in `id2label` / `label2id` (standard `PretrainedConfig` fields).

    Args:
        backbone_config (`PretrainedConfig` or `dict`): configuration of the `AutoModel` encoder.
        marker_scheme (`str`, defaults to `"typed_entity_marker"`): `entity_marker`
            (`[E1]`/`[E2]`), `typed_entity_marker` (`[S:TYPE]`/`[O:TYPE]`) or
            `typed_entity_marker_punct` (`@ * type * subj @`, `# ^ type ^ obj #`, no new tokens).
        entity_types (`list[str]`, defaults to `[]`): entity types with their own markers
            (typed schemes); `default_entity_type` is always included.
        default_entity_type (`str`, defaults to `"ENTITY"`): type used for untyped entities
            (SemEval-2010 and FewRel have none).
        classifier_hidden_size (`int`, *optional*): width of the MLP; defaults to the backbone's
            hidden size.
        classifier_dropout (`float`, defaults to 0.1): dropout between the two layers.
        max_seq_length (`int`, defaults to 128): truncation length used by `predict` and the recipes.
        no_relation_label (`str`, *optional*): the negative class (`Other`, `no_relation`) that
            the micro-F1 leaves out.
        marker_token_ids (`dict[str, int]`, *optional*): marker token -> id, filled in when the
            markers are added to a tokenizer; lets `forward` find marker positions in `input_ids`.
    """

    model_type = "contrastive_relation_classifier"
    sub_configs = {"backbone_config": AutoConfig}
    # Trainer's evaluation loop keeps only the logits (not the token states) of each batch.
    keys_to_ignore_at_inference = ["entity_states", "last_hidden_state", "hidden_states", "attentions"]

    def __init__(
        self,
        backbone_config: PretrainedConfig | dict[str, Any] | None = None,
        marker_scheme: str = "typed_entity_marker",
        entity_types: list[str] | tuple[str, ...] = (),
        default_entity_type: str = "ENTITY",
        classifier_hidden_size: int | None = None,
        classifier_dropout: float = 0.1,
        max_seq_length: int = 128,
        no_relation_label: str | None = None,
        marker_token_ids: dict[str, int] | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(backbone_config, dict):
            if "model_type" not in backbone_config:
                raise ValueError("backbone_config dict needs a 'model_type' key (e.g. 'bert', 'roberta').")
            backbone_config = AutoConfig.for_model(**backbone_config)
        if marker_scheme not in MARKER_SCHEMES:
            raise ValueError(f"Unknown marker_scheme {marker_scheme!r}; expected one of {MARKER_SCHEMES}.")
        if not 0.0 <= float(classifier_dropout) < 1.0:
            raise ValueError(f"classifier_dropout must be in [0, 1), got {classifier_dropout!r}.")
        if classifier_hidden_size is not None and int(classifier_hidden_size) <= 0:
            raise ValueError(f"classifier_hidden_size must be positive, got {classifier_hidden_size!r}.")
        if int(max_seq_length) < 8:
            raise ValueError(f"max_seq_length must be at least 8, got {max_seq_length!r}.")
        self.backbone_config = backbone_config
        self.marker_scheme = marker_scheme
        self.entity_types = list(entity_types)
        self.default_entity_type = default_entity_type
        self.classifier_hidden_size = None if classifier_hidden_size is None else int(classifier_hidden_size)
        self.classifier_dropout = float(classifier_dropout)
        self.max_seq_length = int(max_seq_length)
        self.no_relation_label = no_relation_label
        self.marker_token_ids = dict(marker_token_ids or {})
        super().__init__(**kwargs)
        if no_relation_label is not None and self.label2id and no_relation_label not in self.label2id:
            raise ValueError(
                f"no_relation_label {no_relation_label!r} is not one of the labels {list(self.label2id)}."
            )

    @property
    def hidden_size(self) -> int:
        """Width of the backbone's token states."""
        return backbone_hidden_size(self.backbone_config, type(self).__name__)

    @property
    def marker_tokens(self) -> list[str]:
        """New vocabulary entries of the scheme (empty for the punctuation scheme)."""
        return marker_tokens(self.marker_scheme, self.entity_types, self.default_entity_type)

    @property
    def start_marker_ids(self) -> tuple[list[int], list[int]]:
        """Token ids of the subject-start and object-start markers (bracket schemes)."""
        subj = [i for t, i in self.marker_token_ids.items() if t.startswith(("[E1]", "[S:"))]
        obj = [i for t, i in self.marker_token_ids.items() if t.startswith(("[E2]", "[O:"))]
        return subj, obj


__all__ = ["RelationClassifierConfig"]
