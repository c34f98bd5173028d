"""ReCAT (Hu et al., ICLR 2024, "Augmenting Transformers with Recursively Composed Multi-grained
Representations"): contextual inside-outside (CIO) layers over a pruned CKY chart, under span self-attention.

Data flow of [`ReCATModel`]:

1. token embeddings -> the **top-down split scorer** ([`ReCATParser`], Fast-R2D2 style): a small Transformer over
   the tokens and an MLP on each pair of neighbours gives one score per split point; the parse splits a span at
   its highest score, i.e. merges neighbours bottom-up in ascending score (the merge order);
2. the merge order prunes the CKY chart to O(n) cells (see `hf_contrastive.composition.chart`);
3. `iter_times` **CIO layers** ([`ReCATCIOLayer`]) over that chart. In layer `l`:

   - inside (bottom-up): for each split `k` of a cell `p`, the inside composer reads the two children's inside
     vectors and `p`'s outside vector from layer `l - 1` (a learned context vector in layer 0) and returns a
     vector `c_k` and a score `psi_k`; with `s_k = psi_k + a_left + a_right`, the cell gets
     `e_p = sum_k softmax(s)_k c_k` and the log-score `a_p = sum_k softmax(s)_k s_k` (R2D2's expected score);
   - outside (top-down): the root gets a learned vector and `b_root = 0`; every other cell `x` takes, for each
     cell `p` that has it as a child (with sibling `y` at split `k`), the outside composer's vector `d` and score
     `phi` of (`p`'s outside vector, `y`'s inside vector, the side of `y`), with
     `g = b_p + psi_{p,k} + a_y + phi`; then `o_x = sum softmax(g) d` and `b_x = sum softmax(g) g`;
   - the next layer's leaves are `LayerNorm(token embedding + leaf outside vector)`;

4. the **best tree**: the Viterbi tree of the chart under the last layer's split scores `psi` (a max over a
   cell's splits of `psi_k` plus its children's best scores); its `2n - 1` nodes, each a chart cell, are encoded
   as `Linear([inside; outside]) + start embedding + end embedding` and go through `span_attention_layers`
   Transformer blocks (**span self-attention**). The first `L` node positions are the leaves (aligned with the
   input tokens), the next `L - 1` the internal nodes.

Readings of this module where the specification leaves the details open (not the paper's verified method):
the composers are small pre-LayerNorm Transformers over a summary slot and role-tagged inputs (left child,
right child and parent context for the inside composer; parent outside vector and sibling for the outside one),
scored by a linear layer on the slot's output; the parser's tree only prunes the chart; the mixing rules above (softmax over split scores, expected log-scores)
follow R2D2; the best tree is the chart's Viterbi tree; the **parser loss** is the cross-entropy of the parser's
split distribution within each internal node of that best tree (restricted to the node's split points) against
the node's best split, averaged over nodes: the parser learns to propose the tree the chart prefers (Fast-R2D2's
self-distillation). The merge order is discrete, so the parser is trained by that loss alone.

The model is pure PyTorch and batched over the sentences of a batch: the cells of all sentences are computed
wave by wave (a wave is every cell whose children are done). [`full_cky_inside_outside`] is the plain-loop
reference the tests compare against.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForMaskedLM, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from hf_contrastive.composition.chart import (
    ChartBatch,
    PrunedChart,
    build_pruned_chart,
    merge_order_from_scores,
)
from hf_contrastive.composition.configuration import ReCATConfig
from hf_contrastive.core.configuration import register_auto_classes
from hf_contrastive.core.hub.mixin import HubMixin

__all__ = [
    "RECAT_CITATION",
    "CIOLayerOutput",
    "ReCATBlock",
    "ReCATCIOLayer",
    "ReCATComposer",
    "ReCATForMaskedLM",
    "ReCATForSpanClassification",
    "ReCATMaskedLMOutput",
    "ReCATModel",
    "ReCATModelOutput",
    "ReCATParser",
    "ReCATPreTrainedModel",
    "ReCATSpanClassifierOutput",
    "chart_splits",
    "full_cky_inside_outside",
]

RECAT_CITATION = """@inproceedings{hu2024augmenting,
  title     = {Augmenting Transformers with Recursively Composed Multi-grained Representations},
  author    = {Hu, Xiang and Zhu, Qingyang and Tu, Kewei and Wu, Wei},
  booktitle = {The Twelfth International Conference on Learning Representations},
  year      = {2024}
}"""

# Role ids of the composers' inputs.
_SLOT, _LEFT, _RIGHT, _CONTEXT = 0, 1, 2, 3
_PARENT, _SIBLING_LEFT, _SIBLING_RIGHT = 1, 2, 3


# -- building blocks ---------------------------------------------------------------------------------------


class ReCATBlock(nn.Module):
    """A pre-LayerNorm Transformer block (self-attention, then a GELU feed-forward layer), with an optional key
    padding mask.

    Args:
        config (`ReCATConfig`): width, heads, feed-forward width, dropouts and LayerNorm epsilon.
    """

    def __init__(self, config: ReCATConfig) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.attn_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.ffn_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.ffn_in = nn.Linear(hidden, config.intermediate_size)
        self.ffn_out = nn.Linear(config.intermediate_size, hidden)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.attention_dropout = config.attention_probs_dropout_prob

    def forward(self, states: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`states` `[N, T, H]`; `key_mask` `[N, T]` (`True` for positions to attend to)."""
        n, t, h = states.shape
        q, k, v = (
            self.qkv(self.attn_norm(states)).view(n, t, 3, self.num_heads, h // self.num_heads).unbind(2)
        )
        mask = None if key_mask is None else key_mask[:, None, None, :]
        attended = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=mask,
            dropout_p=self.attention_dropout if self.training else 0.0,
        )
        states = states + self.dropout(self.attn_out(attended.transpose(1, 2).reshape(n, t, h)))
        return states + self.dropout(self.ffn_out(F.gelu(self.ffn_in(self.ffn_norm(states)))))


class ReCATComposer(nn.Module):
    """A composition function: role-tagged input vectors and a summary slot go through `composition_layers`
    Transformer blocks; the slot's output (layer-normed) is the composed vector, a linear layer on it the score.

    Args:
        config (`ReCATConfig`): sizes and `composition_layers`.
    """

    def __init__(self, config: ReCATConfig) -> None:
        super().__init__()
        self.roles = nn.Embedding(4, config.hidden_size)
        self.blocks = nn.ModuleList(ReCATBlock(config) for _ in range(config.composition_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.score = nn.Linear(config.hidden_size, 1)

    def forward(
        self, inputs: Sequence[torch.Tensor], roles: Sequence[int | torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Compose.

        Args:
            inputs (`Sequence[torch.Tensor]`): the input vectors, each `[..., H]` (same leading shape).
            roles (`Sequence[int | torch.Tensor]`): the role id of each input (an int, or a tensor of ids of the
                inputs' leading shape).

        Returns:
            `tuple[torch.Tensor, torch.Tensor]`: the composed vectors `[..., H]` and scores `[...]`.
        """
        lead = inputs[0].shape[:-1]
        slot = self.roles.weight[_SLOT].expand(*lead, -1)
        tagged = [slot]
        for vec, role in zip(inputs, roles, strict=True):
            tagged.append(vec + (self.roles.weight[role] if isinstance(role, int) else self.roles(role)))
        states = torch.stack(tagged, dim=-2).reshape(-1, len(tagged), slot.shape[-1])
        for block in self.blocks:
            states = block(states)
        composed = self.norm(states[:, 0]).reshape(*lead, -1)
        return composed, self.score(composed).squeeze(-1)


@dataclass
class CIOLayerOutput(ModelOutput):
    """What one CIO layer computes for every chart cell (rows in global cell-id order, see `ChartBatch`).

    Args:
        inside (`torch.Tensor` of shape `(cells, hidden_size)`): inside vectors `e`.
        inside_scores (`torch.Tensor` of shape `(cells,)`): inside log-scores `a`.
        split_scores (`torch.Tensor` of shape `(cells, max_splits)`): composition scores `psi` of each cell's
            split slots (0 in unused slots and for leaves).
        outside (`torch.Tensor` of shape `(cells, hidden_size)`): outside vectors `o`.
        outside_scores (`torch.Tensor` of shape `(cells,)`): outside log-scores `b`.
    """

    inside: torch.Tensor | None = None
    inside_scores: torch.Tensor | None = None
    split_scores: torch.Tensor | None = None
    outside: torch.Tensor | None = None
    outside_scores: torch.Tensor | None = None


class ReCATCIOLayer(nn.Module):
    """One contextual inside-outside layer (see the module docstring for the equations).

    Args:
        config (`ReCATConfig`): sizes of the composers.
    """

    def __init__(self, config: ReCATConfig) -> None:
        super().__init__()
        self.inside_composer = ReCATComposer(config)
        self.outside_composer = ReCATComposer(config)
        self.root_outside = nn.Parameter(torch.zeros(config.hidden_size))

    def compose_inside(
        self, left: torch.Tensor, right: torch.Tensor, context: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Vectors and scores of splits, from the children's inside vectors and the parent's context."""
        return self.inside_composer([left, right, context], [_LEFT, _RIGHT, _CONTEXT])

    def compose_outside(
        self, parent_outside: torch.Tensor, sibling: torch.Tensor, sibling_side: int | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Outside candidates from a parent's outside vector and the sibling's inside vector; `sibling_side` is 0
        when the sibling is the left child, 1 when it is the right child."""
        role = sibling_side + _SIBLING_LEFT
        return self.outside_composer([parent_outside, sibling], [_PARENT, role])

    def forward(self, chart: ChartBatch, leaves: torch.Tensor, context: torch.Tensor) -> CIOLayerOutput:
        """Inside then outside pass over a batch of charts.

        Args:
            chart (`ChartBatch`): the charts.
            leaves (`torch.Tensor` of shape `(num_leaves, hidden_size)`): the leaves' inside vectors in
                `(sentence, token)` order.
            context (`torch.Tensor` of shape `(cells, hidden_size)`): each cell's context (its outside vector in
                the previous layer).
        """
        hidden = leaves.shape[-1]
        inside, scores = leaves, leaves.new_zeros(leaves.shape[0])
        split_rows = [leaves.new_zeros(leaves.shape[0], chart.max_splits)]
        for wave in chart.inside_waves:
            width = wave.left.shape[1]
            ctx = context[wave.start : wave.stop, None].expand(-1, width, -1)
            composed, psi = self.compose_inside(inside[wave.left], inside[wave.right], ctx)
            logits = psi + scores[wave.left] + scores[wave.right]
            weights = torch.softmax(logits.masked_fill(~wave.mask, -math.inf), dim=-1)
            inside = torch.cat([inside, (weights[..., None] * composed).sum(1)])
            scores = torch.cat([scores, (weights * logits.masked_fill(~wave.mask, 0.0)).sum(-1)])
            split_rows.append(F.pad(psi.masked_fill(~wave.mask, 0.0), (0, chart.max_splits - width)))
        split_scores = torch.cat(split_rows)
        flat_split = split_scores.reshape(-1)
        num_roots = chart.roots.shape[0]
        outside = self.root_outside.expand(num_roots, hidden)
        out_scores = leaves.new_zeros(num_roots)
        for wave in chart.outside_waves:
            composed, phi = self.compose_outside(
                outside[wave.parent_row], inside[wave.sibling], wave.sibling_side
            )
            logits = out_scores[wave.parent_row] + flat_split[wave.rule] + scores[wave.sibling] + phi
            weights = torch.softmax(logits.masked_fill(~wave.mask, -math.inf), dim=-1)
            outside = torch.cat([outside, (weights[..., None] * composed).sum(1)])
            out_scores = torch.cat([out_scores, (weights * logits.masked_fill(~wave.mask, 0.0)).sum(-1)])
        return CIOLayerOutput(
            inside=inside,
            inside_scores=scores,
            split_scores=split_scores,
            outside=outside[chart.outside_row],
            outside_scores=out_scores[chart.outside_row],
        )


class ReCATParser(nn.Module):
    """The top-down split scorer: position embeddings added to the token embeddings, `parser_layers` Transformer
    blocks, and an MLP on each pair of neighbouring states giving the score of the split point between them.

    Args:
        config (`ReCATConfig`): sizes, `parser_layers` and `max_position_embeddings`.
    """

    def __init__(self, config: ReCATConfig) -> None:
        super().__init__()
        self.positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.blocks = nn.ModuleList(ReCATBlock(config) for _ in range(config.parser_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.scorer = nn.Sequential(
            nn.Linear(2 * config.hidden_size, config.hidden_size), nn.GELU(), nn.Linear(config.hidden_size, 1)
        )

    def forward(self, embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Split scores `[B, L - 1]` (`-inf` at split points beyond a sentence's end) of token embeddings
        `[B, L, H]` with a right-padded `attention_mask` `[B, L]`."""
        length = embeddings.shape[1]
        states = embeddings + self.positions.weight[:length]
        mask = attention_mask.bool()
        for block in self.blocks:
            states = block(states, mask)
        states = self.norm(states)
        scores = self.scorer(torch.cat([states[:, :-1], states[:, 1:]], dim=-1)).squeeze(-1)
        return scores.masked_fill(~(mask[:, 1:] & mask[:, :-1]), -math.inf)


# -- outputs -------------------------------------------------------------------------------------------------


@dataclass
class ReCATModelOutput(ModelOutput):
    """Output of [`ReCATModel`].

    Args:
        last_hidden_state (`torch.Tensor` of shape `(batch_size, sequence_length, hidden_size)`): the leaf nodes'
            states after span self-attention, aligned with the input tokens.
        node_states (`torch.Tensor` of shape `(batch_size, 2 * sequence_length - 1, hidden_size)`): states of the
            best tree's nodes: leaves at positions `0..L-1`, internal nodes at `L..`.
        node_spans (`torch.LongTensor` of shape `(batch_size, 2 * sequence_length - 1, 2)`): inclusive token span
            `(i, j)` of each node (`-1` for padding).
        node_mask (`torch.BoolTensor` of shape `(batch_size, 2 * sequence_length - 1)`): real nodes.
        split_scores (`torch.Tensor` of shape `(batch_size, sequence_length - 1)`): the parser's split-point
            scores (`-inf` beyond a sentence).
        parser_loss (`torch.Tensor`, *optional*): the parser loss (a scalar; zero with its graph when no sentence
            has two tokens).
        cio_layers (`tuple[CIOLayerOutput]`, *optional*): every CIO layer's chart states, with
            `output_chart=True`.
        chart (`ChartBatch`, *optional*): the charts, with `output_chart=True`.
    """

    last_hidden_state: torch.Tensor | None = None
    node_states: torch.Tensor | None = None
    node_spans: torch.LongTensor | None = None
    node_mask: torch.BoolTensor | None = None
    split_scores: torch.Tensor | None = None
    parser_loss: torch.Tensor | None = None
    cio_layers: tuple[CIOLayerOutput, ...] | None = None
    chart: Any = None


@dataclass
class ReCATMaskedLMOutput(ModelOutput):
    """Output of [`ReCATForMaskedLM`].

    Args:
        loss (`torch.Tensor`, *optional*): `mlm_loss + parser_loss_weight * parser_loss`, with `labels`.
        mlm_loss (`torch.Tensor`, *optional*): cross-entropy over the labelled positions.
        parser_loss (`torch.Tensor`, *optional*): see [`ReCATModelOutput`].
        logits (`torch.Tensor` of shape `(batch_size, sequence_length, vocab_size)`): token predictions.
        last_hidden_state (`torch.Tensor` of shape `(batch_size, sequence_length, hidden_size)`): the leaves'
            states.
        node_states (`torch.Tensor`, *optional*): see [`ReCATModelOutput`].
        node_spans (`torch.LongTensor`, *optional*): see [`ReCATModelOutput`].
        node_mask (`torch.BoolTensor`, *optional*): see [`ReCATModelOutput`].
    """

    loss: torch.Tensor | None = None
    mlm_loss: torch.Tensor | None = None
    parser_loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    node_states: torch.Tensor | None = None
    node_spans: torch.LongTensor | None = None
    node_mask: torch.BoolTensor | None = None


@dataclass
class ReCATSpanClassifierOutput(ModelOutput):
    """Output of [`ReCATForSpanClassification`].

    Args:
        loss (`torch.Tensor`, *optional*): `classification loss + parser_loss_weight * parser_loss`, with `labels`.
        classification_loss (`torch.Tensor`, *optional*): cross-entropy of the labels.
        parser_loss (`torch.Tensor`, *optional*): see [`ReCATModelOutput`].
        logits (`torch.Tensor` of shape `(batch_size, num_labels)`): class scores.
        span_vectors (`torch.Tensor` of shape `(batch_size, num_spans, hidden_size)`): the spans' vectors.
    """

    loss: torch.Tensor | None = None
    classification_loss: torch.Tensor | None = None
    parser_loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    span_vectors: torch.Tensor | None = None


# -- models --------------------------------------------------------------------------------------------------


class ReCATPreTrainedModel(PreTrainedModel):
    """Base of the ReCAT models: config class, input name and initialisation."""

    config_class = ReCATConfig
    base_model_prefix = "recat"
    main_input_name = "input_ids"
    # The losses are means over labelled tokens and tree nodes: Trainer divides by the accumulation steps itself.
    accepts_loss_kwargs = False

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, ReCATCIOLayer):
            init.normal_(module.root_outside, mean=0.0, std=std)
        elif isinstance(module, ReCATModel):
            init.normal_(module.initial_context, mean=0.0, std=std)
        elif isinstance(module, ReCATForMaskedLM):
            init.zeros_(module.lm_bias)


class _CardMixin(HubMixin):
    card_template = "recat_encoder.md"
    card_pipeline_tag = "fill-mask"
    card_tags = ("fill-mask", "recursive-composition", "recat", "unsupervised-parsing")
    card_citations = (RECAT_CITATION,)

    def card_details(self) -> dict[str, Any]:
        """Settings of the model for `model_cards/recat_encoder.md`."""
        config = self.config
        return {
            "title": f"ReCAT {type(self).__name__}",
            "description": (
                "A ReCAT encoder (recursive composition over a pruned CKY chart under span self-attention), "
                "made with hf-contrastive."
            ),
            "architecture": type(self).__name__,
            "vocab_size": config.vocab_size,
            "hidden_size": config.hidden_size,
            "num_attention_heads": config.num_attention_heads,
            "intermediate_size": config.intermediate_size,
            "iter_times": config.iter_times,
            "composition_layers": config.composition_layers,
            "window_size": config.window_size,
            "max_position_embeddings": config.max_position_embeddings,
            "parser_layers": config.parser_layers,
            "span_attention_layers": config.span_attention_layers,
            "parser_loss_weight": config.parser_loss_weight,
        }


class ReCATModel(_CardMixin, ReCATPreTrainedModel):
    r"""The ReCAT encoder: split scorer, pruned chart, `iter_times` CIO layers and span self-attention over the
    best tree's nodes (see the module docstring).

    Inputs are right-padded token ids with at most `config.max_position_embeddings` tokens per row.

    Example::

        >>> from hf_contrastive.composition import ReCATConfig, ReCATModel
        >>> model = ReCATModel(ReCATConfig(vocab_size=100, hidden_size=32, num_attention_heads=2,
        ...     intermediate_size=64))
        >>> out = model(torch.randint(1, 100, (2, 9)))
        >>> out.last_hidden_state.shape, out.node_states.shape
        (torch.Size([2, 9, 32]), torch.Size([2, 17, 32]))
    """

    card_pipeline_tag = "feature-extraction"

    def __init__(self, config: ReCATConfig) -> None:
        super().__init__(config)
        hidden = config.hidden_size
        self.embeddings = nn.Embedding(config.vocab_size, hidden, padding_idx=config.pad_token_id)
        self.embedding_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.parser = ReCATParser(config)
        self.initial_context = nn.Parameter(torch.zeros(hidden))
        self.cio_layers = nn.ModuleList(ReCATCIOLayer(config) for _ in range(config.iter_times))
        self.leaf_norms = nn.ModuleList(
            nn.LayerNorm(hidden, eps=config.layer_norm_eps) for _ in range(config.iter_times - 1)
        )
        self.node_projection = nn.Linear(2 * hidden, hidden)
        self.start_embeddings = nn.Embedding(config.max_position_embeddings, hidden)
        self.end_embeddings = nn.Embedding(config.max_position_embeddings, hidden)
        self.node_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.span_layers = nn.ModuleList(ReCATBlock(config) for _ in range(config.span_attention_layers))
        self.final_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings = value

    # -- input checks ----------------------------------------------------------------------------------------
    def _check_inputs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, list[int]]:
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            raise ValueError(
                "input_ids must be a [batch, length] tensor of token ids, got "
                f"{tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__}."
            )
        batch, length = input_ids.shape
        if length > self.config.max_position_embeddings:
            raise ValueError(
                f"Input of {length} tokens is longer than the chart supports (config.max_position_embeddings = "
                f"{self.config.max_position_embeddings}); truncate it or build the model with a larger "
                "max_position_embeddings."
            )
        if batch == 0 or length == 0:
            raise ValueError(f"input_ids is empty (shape {tuple(input_ids.shape)}).")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}, input_ids {tuple(input_ids.shape)}."
            )
        mask = attention_mask.bool()
        lengths = mask.sum(1)
        positions = torch.arange(length, device=mask.device)
        if not torch.equal(mask, positions[None] < lengths[:, None]):
            raise ValueError("attention_mask must be right-padded (ones, then zeros) for ReCAT's chart.")
        if bool((lengths == 0).any()):
            raise ValueError("Every row needs at least one token (a row of attention_mask is all zeros).")
        return mask, lengths.tolist()

    # -- the parts ------------------------------------------------------------------------------------------
    def build_charts(
        self, split_scores: torch.Tensor, lengths: Sequence[int], merge_orders: Sequence[Sequence[int]] | None
    ) -> list[PrunedChart]:
        """Pruned charts from the parser's split scores (or from given merge orders)."""
        if merge_orders is not None and len(merge_orders) != len(lengths):
            raise ValueError(f"merge_orders has {len(merge_orders)} rows for a batch of {len(lengths)}.")
        scores = split_scores.detach().float().cpu().tolist()
        charts = []
        for b, n in enumerate(lengths):
            order = merge_order_from_scores(scores[b][: n - 1]) if merge_orders is None else merge_orders[b]
            charts.append(build_pruned_chart(order, n, self.config.window_size))
        return charts

    def inside_outside(
        self, token_states: torch.Tensor, mask: torch.Tensor, chart: ChartBatch
    ) -> tuple[CIOLayerOutput, ...]:
        """Run the CIO layers over `chart` from token states `[B, L, H]` (right-padded, `mask` `[B, L]`)."""
        tokens = token_states[mask]
        leaves = tokens
        context = self.initial_context.to(tokens.dtype).expand(chart.num_cells, -1)
        layers = []
        for index, layer in enumerate(self.cio_layers):
            if index:
                leaves = self.leaf_norms[index - 1](tokens + layers[-1].outside[: chart.num_leaves])
            out = layer(chart, leaves, context)
            layers.append(out)
            context = out.outside
        return tuple(layers)

    @staticmethod
    def best_trees(chart: ChartBatch, split_scores: torch.Tensor) -> list[list[tuple[int, int, int, int]]]:
        """The Viterbi tree of every chart under the split scores `psi` `[cells, max_splits]`.

        Returns:
            `list[list[tuple[int, int, int, int]]]`: per sentence, its internal nodes as `(cell id, i, j, k)`
            (inclusive span, best split point), root first (pre-order).
        """
        psi = split_scores.detach()
        best = psi.new_zeros(chart.num_leaves)
        best_slot = [torch.zeros(chart.num_leaves, dtype=torch.long, device=psi.device)]
        for wave in chart.inside_waves:
            width = wave.left.shape[1]
            total = psi[wave.start : wave.stop, :width] + best[wave.left] + best[wave.right]
            value, slot = total.masked_fill(~wave.mask, -math.inf).max(-1)
            best = torch.cat([best, value])
            best_slot.append(slot)
        slots = torch.cat(best_slot).tolist()
        trees = []
        for root in chart.roots.tolist():
            nodes, stack = [], [root]
            while stack:
                cell = stack.pop()
                if not chart.split_k[cell]:
                    continue
                i, j = chart.spans[cell]
                slot = slots[cell]
                nodes.append((cell, i, j, chart.split_k[cell][slot]))
                left, right = chart.split_children[cell][slot]
                stack.extend((right, left))
            trees.append(nodes)
        return trees

    def parser_loss(
        self, split_scores: torch.Tensor, trees: Sequence[Sequence[tuple[int, int, int, int]]]
    ) -> torch.Tensor:
        """Mean cross-entropy of the parser's split distribution within each internal node of the best trees
        against the node's best split (see the module docstring)."""
        rows = [(b, i, j, k) for b, nodes in enumerate(trees) for _, i, j, k in nodes]
        if not rows:
            return split_scores.masked_fill(~torch.isfinite(split_scores), 0.0).sum() * 0.0
        index = torch.tensor(rows, dtype=torch.long, device=split_scores.device)
        logits = split_scores[index[:, 0]]
        points = torch.arange(split_scores.shape[1], device=split_scores.device)
        inside = (points[None] >= index[:, 1:2]) & (points[None] < index[:, 2:3])
        logits = logits.masked_fill(~inside, -math.inf)
        return F.cross_entropy(logits.float(), index[:, 3])

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        merge_orders: Sequence[Sequence[int]] | None = None,
        output_chart: bool = False,
        **kwargs: Any,
    ) -> ReCATModelOutput:
        """Encode right-padded token ids.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): token ids.
            attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*): 1 for tokens,
                0 for right padding.
            merge_orders (`Sequence[Sequence[int]]`, *optional*): a merge order per row to use instead of the
                parser's (the parser's scores and loss are still computed).
            output_chart (`bool`, *optional*, defaults to `False`): also return the charts and every CIO layer's
                chart states.
            kwargs (`Any`): ignored (`token_type_ids` and the like from a tokenizer).

        Raises:
            `ValueError`: for an input longer than `config.max_position_embeddings`, an attention mask that is not
                right-padded, or an empty row.
        """
        mask, lengths = self._check_inputs(input_ids, attention_mask)
        tokens = self.dropout(self.embedding_norm(self.embeddings(input_ids)))
        split_scores = self.parser(tokens, mask)
        chart = ChartBatch.from_charts(self.build_charts(split_scores, lengths, merge_orders), tokens.device)
        layers = self.inside_outside(tokens, mask, chart)
        last = layers[-1]
        trees = self.best_trees(chart, last.split_scores)
        parser_loss = self.parser_loss(split_scores, trees)

        batch, length = input_ids.shape
        width = 2 * length - 1
        node_ids = torch.zeros(batch, width, dtype=torch.long)
        node_spans = torch.full((batch, width, 2), -1, dtype=torch.long)
        node_mask = torch.zeros(batch, width, dtype=torch.bool)
        for b, nodes in enumerate(trees):
            leaves = chart.local_to_id[b][: lengths[b]]  # a chart's first cells are its leaves, in order
            node_ids[b, : lengths[b]] = torch.tensor(leaves)
            node_spans[b, : lengths[b]] = torch.arange(lengths[b])[:, None]
            node_mask[b, : lengths[b]] = True
            if nodes:
                node_ids[b, length : length + len(nodes)] = torch.tensor([cell for cell, _, _, _ in nodes])
                node_spans[b, length : length + len(nodes)] = torch.tensor([[i, j] for _, i, j, _ in nodes])
                node_mask[b, length : length + len(nodes)] = True
        device = tokens.device
        node_ids, node_spans, node_mask = node_ids.to(device), node_spans.to(device), node_mask.to(device)
        features = torch.cat([last.inside[node_ids], last.outside[node_ids]], dim=-1)
        starts, ends = node_spans.clamp(min=0).unbind(-1)
        states = self.node_projection(features) + self.start_embeddings(starts) + self.end_embeddings(ends)
        states = self.dropout(self.node_norm(states))
        for block in self.span_layers:
            states = block(states, node_mask)
        states = self.final_norm(states)
        return ReCATModelOutput(
            last_hidden_state=states[:, :length],
            node_states=states,
            node_spans=node_spans,
            node_mask=node_mask,
            split_scores=split_scores,
            parser_loss=parser_loss,
            cio_layers=layers if output_chart else None,
            chart=chart if output_chart else None,
        )

    @staticmethod
    def span_vectors(outputs: ReCATModelOutput, spans: torch.Tensor) -> torch.Tensor:
        """Vectors of token spans from a forward pass's tree nodes.

        A span that is a node of the best tree gets that node's state; any other span is tiled by the fewest
        tree nodes (the largest node starting at each position that stays inside the span), whose states are
        averaged.

        Args:
            outputs (`ReCATModelOutput`): a forward pass's output.
            spans (`torch.LongTensor` of shape `(batch_size, num_spans, 2)`): `(start, end)` token positions,
                `end` exclusive.

        Returns:
            `torch.Tensor` of shape `(batch_size, num_spans, hidden_size)`.

        Raises:
            `ValueError`: for an empty span or one outside its row's tokens.
        """
        if spans.dim() != 3 or spans.shape[-1] != 2 or spans.shape[0] != outputs.node_states.shape[0]:
            raise ValueError(
                f"spans must be [batch, num_spans, 2] for a batch of {outputs.node_states.shape[0]}, "
                f"got {tuple(spans.shape)}."
            )
        node_spans = outputs.node_spans.tolist()
        node_mask = outputs.node_mask.tolist()
        weights = torch.zeros(*spans.shape[:2], outputs.node_states.shape[1])
        for b, row in enumerate(spans.tolist()):
            by_start: dict[int, list[tuple[int, int]]] = {}
            for pos, ((i, j), real) in enumerate(zip(node_spans[b], node_mask[b], strict=True)):
                if real:
                    by_start.setdefault(i, []).append((j, pos))
            length = sum(1 for i, j in node_spans[b] if i == j and i >= 0)
            for s, (start, end) in enumerate(row):
                if not 0 <= start < end <= length:
                    raise ValueError(
                        f"Span ({start}, {end}) of row {b} is empty or outside its {length} tokens "
                        "(spans are [start, end) token positions)."
                    )
                cover, position = [], start
                while position < end:
                    j, pos = max((j, pos) for j, pos in by_start[position] if j < end)
                    cover.append(pos)
                    position = j + 1
                weights[b, s, cover] = 1.0 / len(cover)
        weights = weights.to(outputs.node_states)
        return weights @ outputs.node_states


class ReCATForMaskedLM(_CardMixin, ReCATPreTrainedModel):
    r"""ReCAT with a masked-LM head on the leaves (dense, GELU, LayerNorm, decoder tied to the token embeddings when
    `config.tie_word_embeddings`), trained with `mlm_loss + parser_loss_weight * parser_loss`.

    Example::

        >>> model = ReCATForMaskedLM(ReCATConfig(vocab_size=100, hidden_size=32, num_attention_heads=2,
        ...     intermediate_size=64))
        >>> out = model(input_ids, attention_mask=mask, labels=labels)  # labels: -100 where not masked
        >>> out.loss.backward()
    """

    _tied_weights_keys = {"lm_decoder.weight": "recat.embeddings.weight"}

    def __init__(self, config: ReCATConfig) -> None:
        super().__init__(config)
        self.recat = ReCATModel(config)
        self.lm_dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.lm_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.lm_decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.lm_bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.recat.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.recat.embeddings = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_decoder

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_decoder = value

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> ReCATMaskedLMOutput:
        """Predict the tokens; with `labels` (`-100` where no prediction is scored), return the loss.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): token ids (with masks).
            attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*): right padding.
            labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*): target ids.
            kwargs (`Any`): passed to [`ReCATModel.forward`].
        """
        out = self.recat(input_ids, attention_mask=attention_mask, **kwargs)
        hidden = self.lm_norm(F.gelu(self.lm_dense(out.last_hidden_state)))
        logits = self.lm_decoder(hidden) + self.lm_bias
        loss = mlm_loss = None
        if labels is not None:
            if labels.shape != input_ids.shape:
                raise ValueError(
                    f"labels has shape {tuple(labels.shape)}, input_ids {tuple(input_ids.shape)}."
                )
            if bool((labels != -100).any()):
                mlm_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1))
            else:
                mlm_loss = logits.sum() * 0.0
            loss = mlm_loss + self.config.parser_loss_weight * out.parser_loss
        return ReCATMaskedLMOutput(
            loss=loss,
            mlm_loss=mlm_loss,
            parser_loss=out.parser_loss,
            logits=logits,
            last_hidden_state=out.last_hidden_state,
            node_states=out.node_states,
            node_spans=out.node_spans,
            node_mask=out.node_mask,
        )


class ReCATForSpanClassification(_CardMixin, ReCATPreTrainedModel):
    r"""ReCAT with a classifier on `config.num_spans` span vectors per example (e.g. the two entity mentions of
    relation classification): the spans' vectors ([`ReCATModel.span_vectors`]) are concatenated, then
    dropout, `Linear -> tanh`, dropout, `Linear(num_labels)`. Trained with
    `cross-entropy + parser_loss_weight * parser_loss`.
    """

    card_pipeline_tag = "text-classification"

    def __init__(self, config: ReCATConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.recat = ReCATModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.dense = nn.Linear(config.num_spans * config.hidden_size, config.hidden_size)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        spans: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> ReCATSpanClassifierOutput:
        """Classify examples from their spans.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): token ids.
            spans (`torch.LongTensor` of shape `(batch_size, num_spans, 2)`): `[start, end)` token positions.
            attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*): right padding.
            labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*): class ids.
            kwargs (`Any`): passed to [`ReCATModel.forward`].

        Raises:
            `ValueError`: when `spans` does not hold `config.num_spans` spans per example.
        """
        if spans.dim() != 3 or spans.shape[1] != self.config.num_spans:
            raise ValueError(
                f"spans must be [batch, {self.config.num_spans}, 2] (config.num_spans), got {tuple(spans.shape)}."
            )
        out = self.recat(input_ids, attention_mask=attention_mask, **kwargs)
        vectors = ReCATModel.span_vectors(out, spans)
        hidden = torch.tanh(self.dense(self.dropout(vectors.flatten(1))))
        logits = self.classifier(self.dropout(hidden))
        loss = classification_loss = None
        if labels is not None:
            classification_loss = F.cross_entropy(logits.float(), labels.reshape(-1))
            loss = classification_loss + self.config.parser_loss_weight * out.parser_loss
        return ReCATSpanClassifierOutput(
            loss=loss,
            classification_loss=classification_loss,
            parser_loss=out.parser_loss,
            logits=logits,
            span_vectors=vectors,
        )


# -- the plain-loop reference -----------------------------------------------------------------------------------


def full_cky_inside_outside(
    model: ReCATModel,
    token_states: torch.Tensor,
    splits: Mapping[tuple[int, int], Sequence[int]] | None = None,
) -> list[dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """The CIO layers of `model` on one sentence with plain loops over cells, split points and parents, one
    composition call per split: the reference for the batched, pruned computation (use float64 to compare).

    Args:
        model (`ReCATModel`): supplies the CIO layers, the initial context and the leaf norms (eval mode).
        token_states (`torch.Tensor` of shape `(n, hidden_size)`): the token embeddings the chart starts from
            (after the embedding LayerNorm).
        splits (`Mapping[tuple[int, int], Sequence[int]]`, *optional*): the cells as inclusive spans with their
            split points; default: the full CKY chart (every span, every split point).

    Returns:
        `list[dict]`: per CIO layer, `{(i, j): (inside vector, inside score, outside vector, outside score)}`.
    """
    n = token_states.shape[0]
    if splits is None:
        splits = {(i, j): list(range(i, j)) for i in range(n) for j in range(i, n)}
    cells = sorted(splits, key=lambda s: (s[1] - s[0], s[0]))
    context = {cell: model.initial_context.to(token_states.dtype) for cell in cells}
    leaves = [token_states[t] for t in range(n)]
    results = []
    for index, layer in enumerate(model.cio_layers):
        if index:
            leaves = [model.leaf_norms[index - 1](token_states[t] + results[-1][(t, t)][2]) for t in range(n)]
        inside: dict[tuple[int, int], torch.Tensor] = {}
        score: dict[tuple[int, int], torch.Tensor] = {}
        psi: dict[tuple[tuple[int, int], int], torch.Tensor] = {}
        for i, j in cells:
            if i == j:
                inside[(i, j)], score[(i, j)] = leaves[i], token_states.new_zeros(())
                continue
            vectors, logits = [], []
            for k in splits[(i, j)]:
                vec, s = layer.compose_inside(inside[(i, k)], inside[(k + 1, j)], context[(i, j)])
                psi[((i, j), k)] = s
                vectors.append(vec)
                logits.append(s + score[(i, k)] + score[(k + 1, j)])
            weights = torch.softmax(torch.stack(logits), dim=0)
            inside[(i, j)] = sum(w * v for w, v in zip(weights, vectors, strict=True))
            score[(i, j)] = sum(w * s for w, s in zip(weights, logits, strict=True))
        outside: dict[tuple[int, int], torch.Tensor] = {}
        out_score: dict[tuple[int, int], torch.Tensor] = {}
        for cell in reversed(cells):  # parents (longer spans) first
            if cell == (0, n - 1):
                outside[cell], out_score[cell] = (
                    layer.root_outside.to(token_states.dtype),
                    token_states.new_zeros(()),
                )
                continue
            vectors, logits = [], []
            for parent in cells:
                for k in splits[parent] if parent[1] - parent[0] > cell[1] - cell[0] else ():
                    if (parent[0], k) == cell:  # the cell is the left child, the sibling on the right
                        sibling, side = (k + 1, parent[1]), 1
                    elif (k + 1, parent[1]) == cell:
                        sibling, side = (parent[0], k), 0
                    else:
                        continue
                    vec, phi = layer.compose_outside(outside[parent], inside[sibling], side)
                    vectors.append(vec)
                    logits.append(out_score[parent] + psi[(parent, k)] + score[sibling] + phi)
            weights = torch.softmax(torch.stack(logits), dim=0)
            outside[cell] = sum(w * v for w, v in zip(weights, vectors, strict=True))
            out_score[cell] = sum(w * s for w, s in zip(weights, logits, strict=True))
        results.append({cell: (inside[cell], score[cell], outside[cell], out_score[cell]) for cell in cells})
        context = {cell: outside[cell] for cell in cells}
    return results


def chart_splits(chart: PrunedChart) -> dict[tuple[int, int], list[int]]:
    """`{(i, j): split points}` of a chart, the form [`full_cky_inside_outside`] takes."""
    return {span: [k for k, _, _ in chart.splits[c]] for c, span in enumerate(chart.spans)}


register_auto_classes(ReCATConfig, ReCATModel)
try:
    AutoModelForMaskedLM.register(ReCATConfig, ReCATForMaskedLM)
except ValueError:  # already registered by an earlier import
    pass
