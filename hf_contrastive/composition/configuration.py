"""Configuration of the ReCAT models (Hu et al. 2024, "Augmenting Transformers with Recursively Composed
Multi-grained Representations")."""

from __future__ import annotations

import math
from typing import Any

from transformers import PretrainedConfig

__all__ = ["ReCATConfig"]


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
    return int(value)


def _probability(name: str, value: Any) -> float:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value < 1.0):
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}.")
    return float(value)


class ReCATConfig(PretrainedConfig):
    r"""Configuration of [`ReCATModel`] and its heads ([`ReCATForMaskedLM`], [`ReCATForSpanClassification`]):
    the token embeddings, the top-down split scorer (parser), the contextual inside-outside (CIO) layers over the
    pruned chart, and the span self-attention layers over the nodes of the best tree.

    Args:
        vocab_size (`int`, *optional*, defaults to `30522`): number of token ids.
        hidden_size (`int`, *optional*, defaults to `256`): width of every vector (token, cell, node).
        num_attention_heads (`int`, *optional*, defaults to `4`): heads of every attention block (composition,
            parser and span attention); must divide `hidden_size`.
        intermediate_size (`int`, *optional*, defaults to `1024`): hidden width of the feed-forward sub-layers.
        iter_times (`int`, *optional*, defaults to `2`): number of stacked CIO layers. Layer `l` composes the
            children of a cell conditioned on the cell's outside vector from layer `l - 1`, and its leaves start
            from the leaves' outside vectors of layer `l - 1`.
        composition_layers (`int`, *optional*, defaults to `1`): Transformer blocks of each composition function
            (the inside one and the outside one of every CIO layer); they read a summary slot and their
            role-tagged inputs.
        window_size (`int`, *optional*, defaults to `4`): the pruning window `m`. The chart holds every span of at
            most `m` current units (tokens, then the nodes merged in the parser's order), so that it keeps fewer
            than `2 n m` cells for `n` tokens; an input of at most `m` tokens gets the full CKY chart.
        max_position_embeddings (`int`, *optional*, defaults to `512`): the longest input (in tokens) the chart
            supports (the size of the parser's position table and of the nodes' start / end tables); longer inputs
            raise a `ValueError`.
        parser_layers (`int`, *optional*, defaults to `1`): Transformer blocks of the top-down split scorer.
        span_attention_layers (`int`, *optional*, defaults to `2`): Transformer blocks of the span self-attention
            over the `2n - 1` nodes of the parse tree.
        hidden_dropout_prob (`float`, *optional*, defaults to `0.1`): dropout after attention and feed-forward
            sub-layers and on the embeddings.
        attention_probs_dropout_prob (`float`, *optional*, defaults to `0.1`): dropout on attention weights.
        layer_norm_eps (`float`, *optional*, defaults to `1e-12`): epsilon of every LayerNorm.
        initializer_range (`float`, *optional*, defaults to `0.02`): standard deviation of the initial linear and
            embedding weights.
        parser_loss_weight (`float`, *optional*, defaults to `1.0`): weight of the parser loss added to the
            masked-LM loss (see [`ReCATForMaskedLM`]). The parser learns from this loss only (its merge order is
            discrete), so `0` freezes it in effect (DDP then needs `find_unused_parameters`).
        num_spans (`int`, *optional*, defaults to `2`): spans per example read by [`ReCATForSpanClassification`]
            (two for relation classification); their vectors are concatenated.
        classifier_dropout (`float`, *optional*, defaults to `0.1`): dropout before the span classifier.
        tie_word_embeddings (`bool`, *optional*, defaults to `True`): share the masked-LM decoder with the token
            embeddings.
        pad_token_id (`int`, *optional*, defaults to `0`): padding id (its embedding row is kept at zero).
        mask_token_id (`int`, *optional*): the `[MASK]` id, kept with the model so that masked inputs can be built
            without its tokenizer.
    """

    model_type = "recat"
    # Trainer's evaluation keeps the logits (and the loss); the per-batch tree outputs change shape with the batch.
    keys_to_ignore_at_inference = [
        "mlm_loss",
        "parser_loss",
        "classification_loss",
        "last_hidden_state",
        "node_states",
        "node_spans",
        "node_mask",
        "span_vectors",
    ]

    def __init__(
        self,
        vocab_size: int = 30522,
        hidden_size: int = 256,
        num_attention_heads: int = 4,
        intermediate_size: int = 1024,
        iter_times: int = 2,
        composition_layers: int = 1,
        window_size: int = 4,
        max_position_embeddings: int = 512,
        parser_layers: int = 1,
        span_attention_layers: int = 2,
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        layer_norm_eps: float = 1e-12,
        initializer_range: float = 0.02,
        parser_loss_weight: float = 1.0,
        num_spans: int = 2,
        classifier_dropout: float = 0.1,
        tie_word_embeddings: bool = True,
        pad_token_id: int | None = 0,
        mask_token_id: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = _positive_int("vocab_size", vocab_size)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        self.num_attention_heads = _positive_int("num_attention_heads", num_attention_heads)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be a multiple of num_attention_heads ({num_attention_heads})."
            )
        self.intermediate_size = _positive_int("intermediate_size", intermediate_size)
        self.iter_times = _positive_int("iter_times", iter_times)
        self.composition_layers = _positive_int("composition_layers", composition_layers)
        self.window_size = _positive_int("window_size", window_size)
        if self.window_size < 2:
            raise ValueError(
                f"window_size must be >= 2 (a cell needs two units to split), got {window_size}."
            )
        self.max_position_embeddings = _positive_int("max_position_embeddings", max_position_embeddings)
        self.parser_layers = _positive_int("parser_layers", parser_layers)
        if isinstance(span_attention_layers, bool) or not isinstance(span_attention_layers, int):
            raise ValueError(f"span_attention_layers must be an integer >= 0, got {span_attention_layers!r}.")
        if span_attention_layers < 0:
            raise ValueError(f"span_attention_layers must be an integer >= 0, got {span_attention_layers!r}.")
        self.span_attention_layers = int(span_attention_layers)
        self.hidden_dropout_prob = _probability("hidden_dropout_prob", hidden_dropout_prob)
        self.attention_probs_dropout_prob = _probability(
            "attention_probs_dropout_prob", attention_probs_dropout_prob
        )
        self.classifier_dropout = _probability("classifier_dropout", classifier_dropout)
        if not (isinstance(layer_norm_eps, (int, float)) and layer_norm_eps > 0):
            raise ValueError(f"layer_norm_eps must be a number > 0, got {layer_norm_eps!r}.")
        self.layer_norm_eps = float(layer_norm_eps)
        if not (isinstance(initializer_range, (int, float)) and initializer_range > 0):
            raise ValueError(f"initializer_range must be a number > 0, got {initializer_range!r}.")
        self.initializer_range = float(initializer_range)
        if not (
            isinstance(parser_loss_weight, (int, float))
            and math.isfinite(parser_loss_weight)
            and parser_loss_weight >= 0
        ):
            raise ValueError(f"parser_loss_weight must be a finite number >= 0, got {parser_loss_weight!r}.")
        self.parser_loss_weight = float(parser_loss_weight)
        self.num_spans = _positive_int("num_spans", num_spans)
        for name, value in (("pad_token_id", pad_token_id), ("mask_token_id", mask_token_id)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < vocab_size
            ):
                raise ValueError(f"{name} must be None or a token id in 0..{vocab_size - 1}, got {value!r}.")
        self.mask_token_id = mask_token_id
        self.tie_word_embeddings = bool(tie_word_embeddings)
        super().__init__(pad_token_id=pad_token_id, **kwargs)
