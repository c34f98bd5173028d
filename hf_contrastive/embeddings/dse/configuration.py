"""Configuration of the DSE student: a siamese sentence encoder and a pair-scoring head."""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PretrainedConfig

from hf_contrastive.core.configuration import backbone_hidden_size

DSE_TASKS = ("regression", "classification")
"""What the head predicts: one score per pair (`regression`, e.g. STS-B) or class logits (`classification`,
e.g. MRPC)."""


class DSEConfig(PretrainedConfig):
    r"""Configuration of [`DistilledPairScorer`], the student of Distilled Sentence Embedding (Barkan et al.
    2019): each sentence is embedded alone, as the mean over its tokens of each of the backbone's top
    `num_top_layers` layers, concatenated; a pair `(u, v)` is scored by `[u; v; u*v; |u-v|]` -> Linear ->
    ReLU -> Linear. Every setting lives here, so `save_pretrained` / `from_pretrained` round-trip exactly.

    Args:
        backbone_config (`PretrainedConfig` or `dict`):
            Configuration of the `AutoModel` backbone (BERT, MiniLM, RoBERTa, ...).
        num_top_layers (`int`, *optional*, defaults to 4):
            How many of the last transformer layers are mean-pooled and concatenated (the paper's 4).
            The sentence embedding has `num_top_layers * hidden_size` dimensions.
        classifier_hidden_size (`int`, *optional*, defaults to 512):
            Width of the hidden layer of the pair head (the paper's FC 512).
        classifier_dropout (`float`, *optional*, defaults to 0.0):
            Dropout after the ReLU of the pair head during training (the paper states none).
        task (`str`, *optional*, defaults to `"regression"`):
            `"regression"`: one output per pair (`num_labels` must be 1); `"classification"`: `num_labels`
            class logits (2 by default).
        max_seq_length (`int`, *optional*, defaults to 128):
            Truncation length of each sentence in `encode` / `score_pairs` and in training; never more than the
            backbone's positions. `None` uses the tokenizer's limit, capped at 512.
        kwargs (`Any`, *optional*):
            Other `PretrainedConfig` settings (`num_labels`, `id2label`, ...).
    """

    model_type = "contrastive_dse_pair_scorer"
    sub_configs = {"backbone_config": AutoConfig}

    def __init__(
        self,
        backbone_config: PretrainedConfig | dict[str, Any] | None = None,
        num_top_layers: int = 4,
        classifier_hidden_size: int = 512,
        classifier_dropout: float = 0.0,
        task: str = "regression",
        max_seq_length: int | None = 128,
        **kwargs: Any,
    ) -> None:
        if isinstance(backbone_config, dict):
            if "model_type" not in backbone_config:
                raise ValueError("backbone_config dict needs a 'model_type' key (e.g. 'bert', 'roberta').")
            backbone_config = AutoConfig.for_model(**backbone_config)
        if task not in DSE_TASKS:
            raise ValueError(f"task must be one of {DSE_TASKS}, got {task!r}.")
        for name, value in (
            ("num_top_layers", num_top_layers),
            ("classifier_hidden_size", classifier_hidden_size),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
        if not 0.0 <= float(classifier_dropout) < 1.0:
            raise ValueError(f"classifier_dropout must be in [0, 1), got {classifier_dropout!r}.")
        if max_seq_length is not None and (
            isinstance(max_seq_length, bool) or not isinstance(max_seq_length, int) or max_seq_length < 1
        ):
            raise ValueError(f"max_seq_length must be an integer >= 1 or None, got {max_seq_length!r}.")
        layers = getattr(backbone_config, "num_hidden_layers", None)
        if isinstance(layers, int) and num_top_layers > layers:
            raise ValueError(
                f"num_top_layers={num_top_layers} exceeds the backbone's {layers} transformer layers."
            )
        labels_given = kwargs.get("num_labels") is not None or kwargs.get("id2label") is not None
        self.backbone_config = backbone_config
        self.num_top_layers = num_top_layers
        self.classifier_hidden_size = classifier_hidden_size
        self.classifier_dropout = float(classifier_dropout)
        self.task = task
        self.max_seq_length = max_seq_length
        super().__init__(**kwargs)
        if not labels_given:
            self.num_labels = 1 if task == "regression" else 2
        if task == "regression" and self.num_labels != 1:
            raise ValueError(
                f"task='regression' predicts one score per pair: num_labels must be 1, got {self.num_labels}."
            )
        if task == "classification" and self.num_labels < 2:
            raise ValueError(f"task='classification' needs num_labels >= 2, got {self.num_labels}.")

    @property
    def hidden_size(self) -> int:
        """Width of the backbone's token states."""
        return backbone_hidden_size(self.backbone_config, type(self).__name__)

    @property
    def embedding_dim(self) -> int:
        """Size of a sentence embedding: `num_top_layers * hidden_size`."""
        return self.num_top_layers * self.hidden_size

    @property
    def feature_dim(self) -> int:
        """Size of the pair features `[u; v; u*v; |u-v|]`: `4 * embedding_dim`."""
        return 4 * self.embedding_dim


__all__ = ["DSEConfig", "DSE_TASKS"]
