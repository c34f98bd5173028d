"""Configurations of the reranker heads."""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PretrainedConfig

from hf_contrastive.core.configuration import backbone_hidden_size

DEFAULT_LLM_PROMPT = (
    "Judge whether the document answers or supports the query. Answer only yes or no.\n"
    "Query: {query}\nDocument: {document}\nRelevant:"
)


def _backbone(config: PretrainedConfig | dict[str, Any] | None) -> PretrainedConfig | None:
    if isinstance(config, dict):
        if "model_type" not in config:
            raise ValueError("backbone_config dict needs a 'model_type' key (e.g. 'bert', 'llama').")
        config = AutoConfig.for_model(**config)
    return config


class CrossEncoderRerankerConfig(PretrainedConfig):
    r"""Configuration of [`CrossEncoderReranker`]: a bidirectional encoder reading the
    `[CLS] query [SEP] document [SEP]` pair and a scoring head on its first token (Nogueira &
    Cho 2019, "Passage Re-ranking with BERT").

    Args:
        backbone_config (`PretrainedConfig` or `dict`): the `AutoModel` backbone (BERT, MiniLM, ...).
        head_dropout (`float`, defaults to 0.1): dropout before each layer of the head.
        max_seq_length (`int`, defaults to 512): truncation length of the pair (the document side is
            cut first).
        activation (`str`, defaults to `"sigmoid"`): applied by `predict` to the logit (`"sigmoid"`
            gives a relevance probability for BCE-trained heads; `"identity"` the raw logit).
        pooling (`str`, defaults to `"cls"`): what the head reads: the first token (`"cls"`, monoBERT)
            or the mean of the pair's token states (`"mean"`, a better start for backbones trained
            as mean-pooled sentence encoders such as all-MiniLM-L6-v2).
    """

    model_type = "contrastive_cross_encoder_reranker"
    sub_configs = {"backbone_config": AutoConfig}

    def __init__(
        self,
        backbone_config: PretrainedConfig | dict[str, Any] | None = None,
        head_dropout: float = 0.1,
        max_seq_length: int = 512,
        activation: str = "sigmoid",
        pooling: str = "cls",
        **kwargs: Any,
    ) -> None:
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}.")
        if activation not in ("sigmoid", "identity"):
            raise ValueError(f"activation must be 'sigmoid' or 'identity', got {activation!r}.")
        if not 0.0 <= float(head_dropout) < 1.0:
            raise ValueError(f"head_dropout must be in [0, 1), got {head_dropout!r}.")
        if int(max_seq_length) < 8:
            raise ValueError(f"max_seq_length must be >= 8 tokens, got {max_seq_length!r}.")
        self.backbone_config = _backbone(backbone_config)
        self.head_dropout = float(head_dropout)
        self.max_seq_length = int(max_seq_length)
        self.activation = activation
        self.pooling = pooling
        super().__init__(**kwargs)

    @property
    def hidden_size(self) -> int:
        return backbone_hidden_size(self.backbone_config, type(self).__name__)


class LLMYesNoRerankerConfig(PretrainedConfig):
    r"""Configuration of [`LLMYesNoReranker`]: a causal LM reads a prompt holding the query and the
    document and the pair is scored by the next-token logit of "yes" (and "no").

    The two objectives of "SFT vs contrastive learning for LLM reranking" (2025): `sft` is a
    pointwise cross-entropy of the softmax over the {yes, no} logits (label yes for relevant, no
    for irrelevant pairs); `cl` is InfoNCE over the "yes" logits of one relevant and n
    irrelevant documents of the same query. Scores at inference follow the objective
    (`score_mode="auto"`): `yes - no` logit difference (the log-odds of yes) for SFT, the
    "yes" logit for CL.

    Args:
        backbone_config (`PretrainedConfig` or `dict`): the `AutoModelForCausalLM` backbone.
        yes_token_id / no_token_id (`int`): vocabulary ids of the answer tokens (set from the
            tokenizer by `LLMYesNoReranker.from_backbone`: the first token of `" yes"` / `" no"`).
        prompt_template (`str`): must contain `{query}` and `{document}` once each, the
            document after the query; the answer token follows the template's end.
        max_seq_length (`int`, defaults to 512): prompt length; the document is cut to fit.
        objective (`str`, defaults to `"sft"`): the training objective it was trained with.
        score_mode (`str`, defaults to `"auto"`): `"yes_minus_no"`, `"yes"` or `"auto"`.
    """

    model_type = "contrastive_llm_yes_no_reranker"
    sub_configs = {"backbone_config": AutoConfig}

    def __init__(
        self,
        backbone_config: PretrainedConfig | dict[str, Any] | None = None,
        yes_token_id: int | None = None,
        no_token_id: int | None = None,
        prompt_template: str = DEFAULT_LLM_PROMPT,
        max_seq_length: int = 512,
        objective: str = "sft",
        score_mode: str = "auto",
        **kwargs: Any,
    ) -> None:
        if objective not in ("sft", "cl"):
            raise ValueError(f"objective must be 'sft' or 'cl', got {objective!r}.")
        if score_mode not in ("auto", "yes_minus_no", "yes"):
            raise ValueError(f"score_mode must be 'auto', 'yes_minus_no' or 'yes', got {score_mode!r}.")
        if prompt_template.count("{query}") != 1 or prompt_template.count("{document}") != 1:
            raise ValueError("prompt_template must contain '{query}' and '{document}' exactly once each.")
        if prompt_template.index("{query}") > prompt_template.index("{document}"):
            raise ValueError("prompt_template must place '{query}' before '{document}'.")
        if yes_token_id is not None and yes_token_id == no_token_id:
            raise ValueError(f"yes_token_id and no_token_id must differ, both are {yes_token_id}.")
        self.backbone_config = _backbone(backbone_config)
        self.yes_token_id = yes_token_id
        self.no_token_id = no_token_id
        self.prompt_template = prompt_template
        self.max_seq_length = int(max_seq_length)
        self.objective = objective
        self.score_mode = score_mode
        super().__init__(**kwargs)

    @property
    def resolved_score_mode(self) -> str:
        if self.score_mode != "auto":
            return self.score_mode
        return "yes_minus_no" if self.objective == "sft" else "yes"


__all__ = ["CrossEncoderRerankerConfig", "LLMYesNoRerankerConfig", "DEFAULT_LLM_PROMPT"]
