"""TKRE: two-stage knowledge-guided pretraining for few-shot relation extraction, and fine-tuning.

TKRE (2025) prepares an encoder for few-shot relation extraction in two stages before fine-tuning:

1. **Masked span language modelling** (MSLM): masked LM where tokens between the two entities are
   masked with p 0.8, entity tokens with 0.5 and the rest with 0.2 ([`MaskedSpanLMCollator`]).
2. **Span-level contrastive learning** (SCL), trained together with MSLM, `loss = l1 * MLM + l2 * SCL`
   (both weights 1): each relation has a learned anchor embedding; the positive is the mean-pooled
   relation span, the negative a random span of 1-3 tokens outside the entities; spans go through a
   2-layer MLP, everything is L2-normalised and compared with temperature 0.1 ([`SpanContrastiveLoss`]).

The pretrained encoder is then fine-tuned as a [`RelationClassifier`] (typed entity markers, subject- and
object-start states -> Linear-ReLU-Dropout-Linear) by [`RelationClassificationTrainer`].

Definitions used here (the paper gives them in words): the *relation span* is the tokens strictly
between the first entity's end marker and the second entity's start marker; when the entities are
adjacent (nothing between them) it is the whole stretch from the first start marker to the second end
marker. Negative spans are drawn from ordinary tokens outside both entities (markers included) and
outside the relation span; when a sentence has no such token the negative is drawn from outside the
entities only, and when it has none at all the example contributes no SCL term.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForMaskedLM, AutoTokenizer, Trainer, TrainingArguments

from hf_contrastive.core.checkpoint import AtomicCheckpointMixin
from hf_contrastive.core.data.checks import require_rows
from hf_contrastive.core.engines import EngineMixin
from hf_contrastive.core.hub.card import ModelCardInfo
from hf_contrastive.core.hub.mixin import save_with_card
from hf_contrastive.core.peft import apply_peft
from hf_contrastive.relation.data import (
    MARKER_SCHEMES,
    RelationExample,
    mark_words,
    marker_tokens,
)
from hf_contrastive.relation.losses import SpanContrastiveLoss
from hf_contrastive.relation.mslm import MaskedSpanLMCollator
from hf_contrastive.relation.trainer import (
    RelationClassificationTrainer,
    RelationFinetuneConfig,
    as_relation_dataset,
    with_marker_tokens,
)

logger = logging.getLogger(__name__)


# -- span helpers -------------------------------------------------------------------------------
def relation_span_bounds(entity_positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(start, end)` (end exclusive) of each row's relation span, from `[B, 4]` marker positions."""
    s0, s1, o0, o1 = entity_positions.unbind(dim=1)
    subject_first = s0 < o0
    first_end = torch.where(subject_first, s1, o1)
    second_start = torch.where(subject_first, o0, s0)
    start = first_end + 1
    end = second_start
    empty = end <= start
    first_start = torch.where(subject_first, s0, o0)
    second_end = torch.where(subject_first, o1, s1)
    start = torch.where(empty, first_start, start)
    end = torch.where(empty, second_end + 1, end)
    return start, end


def span_mean(hidden: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """Mean of `hidden[b, start[b]:end[b]]` for each row: `[B, L, H] -> [B, H]`."""
    pos = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
    mask = ((pos >= start.unsqueeze(1)) & (pos < end.unsqueeze(1))).to(hidden.dtype)
    counts = mask.sum(dim=1, keepdim=True).clamp(min=1.0)
    return (hidden * mask.unsqueeze(-1)).sum(dim=1) / counts


def sample_negative_spans(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    entity_positions: torch.Tensor,
    protected_ids: torch.Tensor,
    max_span: int = 3,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random contiguous spans of 1..`max_span` ordinary tokens outside the entities.

    Returns `(start, end, valid)` of shape `[B]`; `valid` is False for rows with no candidate.
    A span starts at a random candidate position and extends right over candidates only.
    """
    b, n = input_ids.shape
    pos = torch.arange(n).unsqueeze(0).expand(b, n)
    ep = entity_positions.cpu()
    s0, s1, o0, o1 = (ep[:, i : i + 1] for i in range(4))
    ordinary = (attention_mask.cpu() == 1) & ~torch.isin(input_ids.cpu(), protected_ids)
    outside_entities = ~(((pos >= s0) & (pos <= s1)) | ((pos >= o0) & (pos <= o1)))
    rs, re_ = relation_span_bounds(ep)
    outside_relation = ~((pos >= rs.unsqueeze(1)) & (pos < re_.unsqueeze(1)))
    strict = ordinary & outside_entities & outside_relation
    loose = ordinary & outside_entities
    cand = torch.where(strict.any(dim=1, keepdim=True), strict, loose)
    valid = cand.any(dim=1)
    starts = torch.zeros(b, dtype=torch.long)
    ends = torch.ones(b, dtype=torch.long)
    lengths = torch.randint(1, max_span + 1, (b,), generator=generator)
    for i in range(b):
        where = cand[i].nonzero().flatten()
        if where.numel() == 0:
            continue
        j = int(where[torch.randint(where.numel(), (1,), generator=generator)])
        k = j + 1
        while k < n and k - j < int(lengths[i]) and bool(cand[i, k]):
            k += 1
        starts[i], ends[i] = j, k
    dev = input_ids.device
    return starts.to(dev), ends.to(dev), valid.to(dev)


def freeze_lower_layers(encoder: nn.Module, n_layers: int) -> None:
    """Freeze an encoder's input embeddings (and a decoder tied to them) and its lowest `n_layers` layers.

    Args:
        encoder (`nn.Module`): a BERT-family encoder (`encoder.embeddings`, `encoder.encoder.layer`).
        n_layers (`int`): how many of the lowest transformer layers to freeze (at most the layer count).
    """
    body = getattr(encoder, "encoder", None)
    layers = getattr(body, "layer", None) if body is not None else None
    if layers is None or not hasattr(encoder, "embeddings"):
        raise ValueError(
            f"freeze_layers needs a BERT-family encoder (embeddings + encoder.layer); got {type(encoder).__name__}."
        )
    if not 0 <= n_layers <= len(layers):
        raise ValueError(
            f"freeze_layers must be between 0 and {len(layers)} (the layer count), got {n_layers}."
        )
    for module in (encoder.embeddings, *list(layers)[:n_layers]):
        for p in module.parameters():
            p.requires_grad_(False)


# -- pretraining model ----------------------------------------------------------------------------
class TKREPretrainingModel(nn.Module):
    """Masked-LM encoder + relation anchors + span projection, for TKRE's two pretraining stages.

    Args:
        mlm_model (`nn.Module`): an `AutoModelForMaskedLM` (BERT-family); its encoder is what fine-tuning gets.
        num_relations (`int`): number of relation anchors (stage 2).
        projection_dim (`int`, *optional*, defaults to `128`): output size of the 2-layer span projection (hidden -> hidden -> projection_dim).
    """

    def __init__(self, mlm_model: nn.Module, num_relations: int, projection_dim: int = 128) -> None:
        super().__init__()
        self.mlm_model = mlm_model
        hidden = mlm_model.config.hidden_size
        self.projection = nn.Sequential(
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, projection_dim)
        )
        self.anchors = nn.Parameter(torch.randn(max(int(num_relations), 1), projection_dim) * 0.02)
        self.config = mlm_model.config

    @property
    def encoder(self) -> nn.Module:
        model = self.mlm_model
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        return getattr(model, model.base_model_prefix)

    def activation_checkpointing_enable(
        self, activation_checkpointing_kwargs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        """Activation checkpointing in the encoder's layers; `Trainer` calls it for `activation_checkpointing=True`.

        Args:
            activation_checkpointing_kwargs (`dict[str, Any]`, *optional*): passed to `torch.utils.checkpoint`
                (transformers' default: `{"use_reentrant": False}`).
            kwargs (`Any`): `every_n_layers` / `offload`, as `PreTrainedModel.activation_checkpointing_enable`.
        """
        encoder = self.encoder
        if hasattr(encoder, "activation_checkpointing_enable"):
            encoder.activation_checkpointing_enable(activation_checkpointing_kwargs, **kwargs)
        else:  # transformers releases before the method's rename
            encoder.gradient_checkpointing_enable(activation_checkpointing_kwargs, **kwargs)

    def gradient_checkpointing_enable(
        self, gradient_checkpointing_kwargs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        """The earlier name of [`activation_checkpointing_enable`] (what `Trainer` calls before the rename).

        Args:
            gradient_checkpointing_kwargs (`dict[str, Any]`, *optional*): passed to `torch.utils.checkpoint`.
            kwargs (`Any`): as [`activation_checkpointing_enable`].
        """
        self.activation_checkpointing_enable(gradient_checkpointing_kwargs, **kwargs)

    def mlm_head(self) -> nn.Module:
        """The masked-LM prediction head (BERT's `cls`, RoBERTa's `lm_head`)."""
        model = (
            self.mlm_model.get_base_model() if hasattr(self.mlm_model, "get_base_model") else self.mlm_model
        )
        for name in ("cls", "lm_head"):
            head = getattr(model, name, None)
            if head is not None:
                return head
        raise ValueError(
            f"Cannot find the masked-LM head of {type(model).__name__} (expected `cls` or `lm_head`)."
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **_: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Token states `[B, L, H]` and the masked-LM loss over the labelled positions only (the
        vocabulary projection is computed for masked tokens alone, not the whole sequence)."""
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**inputs, return_dict=True).last_hidden_state
        mlm_loss = None
        if labels is not None:
            selected = labels != -100
            if bool(selected.any()):
                logits = self.mlm_head()(hidden[selected])
                mlm_loss = F.cross_entropy(logits.float(), labels[selected])
            else:
                mlm_loss = hidden.sum() * 0.0
        return hidden, mlm_loss


# -- pretraining config and trainer ---------------------------------------------------------------
@dataclass
class TKREConfig(TrainingArguments):
    r"""Arguments of [`TKREPretrainer`]: `TrainingArguments` plus TKRE's two stages.

    Defaults are TKRE's: masking p 0.8 between the entities / 0.5 entity tokens / 0.2 others, BERT's
    80/10/10 replacement, SCL temperature 0.1, negative spans of 1-3 tokens, `l1 = l2 = 1`.

    Args:
        stage1_epochs (`float`, 3): epochs of stage 1 (MSLM alone). 0 skips the stage.
        stage2_epochs (`float`, 3): epochs of stage 2 (MSLM + SCL). 0 skips the stage.
        p_between / p_entity / p_other (`float`): masking probabilities (0.8 / 0.5 / 0.2).
        mask_replace_prob / random_replace_prob (`float`): 0.8 / 0.1.
        mlm_weight (`float`, 1.0): l1. scl_weight (`float`, 1.0): l2.
        scl_temperature (`float`, 0.1): tau of the span-level contrastive loss.
        anchor_negatives (`bool`, False): add other relations' anchors to the SCL denominator.
        projection_dim (`int`, 128): output size of the 2-layer span projection.
        negative_span_max (`int`, 3): longest negative span.
        marker_scheme / entity_types / default_entity_type: entity markers (as the classifier's config).
        max_seq_length (`int`, 128): token budget per example.
        with_explanations (`bool`, True): append an example's LLM explanation as a second segment.
        mlm_head_warmup_steps (`int`, 100): optimiser steps that train the masked-LM head alone (encoder,
            embeddings and a decoder tied to them frozen) on the stage-1 data before stage 1. An encoder
            that ships no masked-LM head (sentence-transformers checkpoints such as all-MiniLM-L6-v2) gets
            a random head transform; without the warm-up its first gradients reach the encoder through a
            random head. 0 skips the warm-up (TKRE's paper starts from BERT's trained head and has none).
        mlm_head_warmup_learning_rate (`float`, 1e-3): learning rate of the warm-up (AdamW, constant).
        encoder_learning_rate (`float`, *optional*): learning rate of the encoder (embeddings and layers)
            in both stages; the MLM head, span projection and anchors keep `learning_rate`. `None` (the
            default) uses `learning_rate` everywhere.
        freeze_layers (`int`, 0): freeze the embeddings (and a decoder tied to them) and the lowest
            `freeze_layers` transformer layers in both stages. 0 trains everything.
    """

    stage1_epochs: float = field(default=3.0, metadata={"help": "Epochs of stage 1 (MSLM)."})
    stage2_epochs: float = field(default=3.0, metadata={"help": "Epochs of stage 2 (MSLM + SCL)."})
    p_between: float = field(default=0.8, metadata={"help": "Masking p between the entities."})
    p_entity: float = field(default=0.5, metadata={"help": "Masking p of entity tokens."})
    p_other: float = field(default=0.2, metadata={"help": "Masking p of other tokens."})
    mask_replace_prob: float = field(default=0.8, metadata={"help": "Selected -> [MASK]."})
    random_replace_prob: float = field(default=0.1, metadata={"help": "Selected -> random token."})
    mlm_weight: float = field(default=1.0, metadata={"help": "l1 (MLM weight)."})
    scl_weight: float = field(default=1.0, metadata={"help": "l2 (SCL weight)."})
    scl_temperature: float = field(default=0.1, metadata={"help": "SCL temperature."})
    anchor_negatives: bool = field(default=False, metadata={"help": "Other anchors as SCL negatives."})
    projection_dim: int = field(default=128, metadata={"help": "Span projection output size."})
    negative_span_max: int = field(default=3, metadata={"help": "Longest negative span."})
    marker_scheme: str = field(default="typed_entity_marker", metadata={"help": f"One of {MARKER_SCHEMES}."})
    entity_types: list[str] = field(default_factory=list, metadata={"help": "Entity types with markers."})
    default_entity_type: str = field(default="ENTITY", metadata={"help": "Type of untyped entities."})
    max_seq_length: int = field(default=128, metadata={"help": "Token budget per example."})
    with_explanations: bool = field(default=True, metadata={"help": "Append explanations as segment 2."})
    mlm_head_warmup_steps: int = field(
        default=100, metadata={"help": "Steps training the MLM head alone before stage 1 (0: none)."}
    )
    mlm_head_warmup_learning_rate: float = field(default=1e-3, metadata={"help": "Warm-up learning rate."})
    encoder_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the encoder (None: learning_rate)."}
    )
    freeze_layers: int = field(
        default=0, metadata={"help": "Freeze the embeddings and this many lowest layers (0: none)."}
    )
    remove_unused_columns: bool = field(default=False, metadata={"help": "Examples are objects, keep them."})
    learning_rate: float = field(default=5e-5, metadata={"help": "Learning rate."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Batch size."})
    report_to: Any = field(default="none", metadata={"help": "Loggers."})
    save_strategy: Any = field(default="no", metadata={"help": "Checkpoints."})

    def __post_init__(self) -> None:
        if self.marker_scheme not in MARKER_SCHEMES:
            raise ValueError(f"marker_scheme must be one of {MARKER_SCHEMES}, got {self.marker_scheme!r}.")
        if self.stage1_epochs < 0 or self.stage2_epochs < 0:
            raise ValueError("stage1_epochs and stage2_epochs must be >= 0.")
        if not (math.isfinite(self.scl_temperature) and self.scl_temperature > 0):
            raise ValueError(f"scl_temperature must be > 0, got {self.scl_temperature!r}.")
        if self.negative_span_max < 1:
            raise ValueError(f"negative_span_max must be >= 1, got {self.negative_span_max}.")
        if int(self.mlm_head_warmup_steps) != self.mlm_head_warmup_steps or self.mlm_head_warmup_steps < 0:
            raise ValueError(
                f"mlm_head_warmup_steps must be an integer >= 0, got {self.mlm_head_warmup_steps!r}."
            )
        if not (math.isfinite(self.mlm_head_warmup_learning_rate) and self.mlm_head_warmup_learning_rate > 0):
            raise ValueError(
                f"mlm_head_warmup_learning_rate must be > 0, got {self.mlm_head_warmup_learning_rate!r}."
            )
        if self.encoder_learning_rate is not None and not (
            math.isfinite(self.encoder_learning_rate) and self.encoder_learning_rate >= 0
        ):
            raise ValueError(
                f"encoder_learning_rate must be >= 0 or None, got {self.encoder_learning_rate!r}."
            )
        if int(self.freeze_layers) != self.freeze_layers or self.freeze_layers < 0:
            raise ValueError(f"freeze_layers must be an integer >= 0, got {self.freeze_layers!r}.")
        super().__post_init__()


class TKREPretrainer(AtomicCheckpointMixin, EngineMixin, Trainer):
    r"""Runs TKRE's stage 1 (MSLM) then stage 2 (MSLM + span contrastive) and hands the encoder on.

    Args:
        model (`Any`, *optional*): an encoder path / Hub id (loaded with `AutoModelForMaskedLM`; a sentence-transformers
            folder works), a masked-LM model, or a [`TKREPretrainingModel`].
        args (`TKREConfig | None`, *optional*): [`TKREConfig`].
        stage1_dataset (`Any`, *optional*): examples for stage 1 (labels not needed): `RelationExample`s or dicts.
        stage2_dataset (`Any`, *optional*): labelled examples for stage 2 (their labels pick the anchors).
        relations (`Sequence[str] | None`, *optional*): the relation schema (anchor order); defaults to the sorted labels of stage 2.
        processing_class (`Any`, *optional*): tokenizer; loaded from `model` when it is a path. The markers are added.
        peft_config (`Any`, *optional*): optional `peft.LoraConfig` for the encoder (merged when the encoder is exported).

    After `train()`, `export_encoder()` returns `(encoder, tokenizer)` for
    `RelationClassifier.from_backbone`, and `save_encoder(dir)` writes them as a plain folder.
    """

    def __init__(
        self,
        model: Any = None,
        args: TKREConfig | None = None,
        stage1_dataset: Any = None,
        stage2_dataset: Any = None,
        relations: Sequence[str] | None = None,
        processing_class: Any = None,
        peft_config: Any = None,
        **kwargs: Any,
    ) -> None:
        args = args or TKREConfig(output_dir="tkre-output")
        stage1 = as_relation_dataset(stage1_dataset)
        stage2 = as_relation_dataset(stage2_dataset)
        if stage1 is None and stage2 is None:
            raise ValueError("TKREPretrainer needs stage1_dataset and/or stage2_dataset.")
        require_rows(stage1, name="stage1_dataset", owner=type(self).__name__)
        require_rows(stage2, name="stage2_dataset", owner=type(self).__name__)
        if stage2 is not None:
            missing = [e.id for e in stage2.examples if e.label is None][:3]
            if missing:
                raise ValueError(f"Stage 2 examples need relation labels; e.g. examples {missing} have none.")
            found = sorted({e.label for e in stage2.examples})
            relations = list(relations) if relations is not None else found
            unknown = sorted(set(found) - set(relations))
            if unknown:
                raise ValueError(f"Stage-2 labels {unknown} are not in the relation schema {relations}.")
        self.relations = list(relations or [])
        if isinstance(model, (str, os.PathLike)):
            processing_class = processing_class or AutoTokenizer.from_pretrained(os.fspath(model))
            model = AutoModelForMaskedLM.from_pretrained(os.fspath(model))
        if processing_class is None:
            raise ValueError(
                "TKREPretrainer needs processing_class= (the tokenizer) when given a loaded model."
            )
        tokenizer = processing_class
        markers = marker_tokens(args.marker_scheme, args.entity_types, args.default_entity_type)
        if markers:
            tokenizer.add_tokens(markers, special_tokens=True)
        if not isinstance(model, TKREPretrainingModel):
            if len(tokenizer) > model.get_input_embeddings().num_embeddings:
                model.resize_token_embeddings(len(tokenizer))
            if peft_config is not None:
                model = apply_peft(model, with_marker_tokens(peft_config, tokenizer, markers))
            model = TKREPretrainingModel(model, len(self.relations), projection_dim=args.projection_dim)
        self.stage1_dataset, self.stage2_dataset = stage1, stage2
        self.label2id = {r: i for i, r in enumerate(self.relations)}
        self.collator = MaskedSpanLMCollator(
            tokenizer,
            p_between=args.p_between,
            p_entity=args.p_entity,
            p_other=args.p_other,
            mask_replace_prob=args.mask_replace_prob,
            random_replace_prob=args.random_replace_prob,
            seed=args.seed,
            marker_scheme=args.marker_scheme,
            entity_types=args.entity_types,
            default_entity_type=args.default_entity_type,
            label2id=self.label2id or None,
            max_length=args.max_seq_length,
            with_explanations=args.with_explanations,
        )
        self.scl = SpanContrastiveLoss(args.scl_temperature, anchor_negatives=args.anchor_negatives)
        if args.freeze_layers:
            freeze_lower_layers(model.encoder, int(args.freeze_layers))
        self.warmup_losses: list[float] = []
        self.stage = 1
        self._span_generator = torch.Generator().manual_seed(args.seed)
        self._last_components: dict[str, float] = {}
        super().__init__(
            model=model,
            args=args,
            train_dataset=stage1 if stage1 is not None else stage2,
            data_collator=self.collator,
            processing_class=tokenizer,
            **kwargs,
        )

    def _copies_model_weights(self) -> bool:
        # Stage 2 reads the relation anchors and the span projection outside the model's forward.
        return True

    def _weights_outside_forward(self) -> str:
        return (
            "Stage 2 of TKRE reads the relation anchors and the span projection outside the model's forward"
        )

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """`Trainer`'s optimiser; with `encoder_learning_rate` set, the encoder's parameters get their own
        groups at that rate (weight decay as `Trainer` splits it)."""
        optimizer = super().create_optimizer(model)
        enc_lr = self.args.encoder_learning_rate
        if enc_lr is None or getattr(self, "_encoder_groups_split", None) is optimizer:
            return optimizer
        encoder_ids = {id(p) for p in self.model.encoder.parameters()}
        groups = list(optimizer.param_groups)
        for group in groups:
            inside = [p for p in group["params"] if id(p) in encoder_ids]
            if not inside:
                continue
            group["params"] = [p for p in group["params"] if id(p) not in encoder_ids]
            optimizer.add_param_group(
                {**{k: v for k, v in group.items() if k != "params"}, "params": inside, "lr": enc_lr}
            )
        optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]
        self._encoder_groups_split = optimizer
        return optimizer

    def warm_up_mlm_head(self, steps: int | None = None) -> list[float]:
        """Train the masked-LM head alone for `steps` (default `mlm_head_warmup_steps`) AdamW steps.

        The encoder runs without gradients; the head's own parameters (transform, bias) train at
        `mlm_head_warmup_learning_rate` with a constant rate; a decoder weight tied to the input
        embeddings stays frozen with them. Batches come from the stage-1 data (stage 2's when there is
        none), reshuffled each pass, masked as in stage 1. Returns the per-step losses.

        Args:
            steps (`int`, *optional*): number of steps; defaults to `args.mlm_head_warmup_steps`.
        """
        steps = int(self.args.mlm_head_warmup_steps if steps is None else steps)
        data = self.stage1_dataset if self.stage1_dataset is not None else self.stage2_dataset
        if steps <= 0 or data is None or len(data) == 0:
            return []
        model = self.model
        embedding_ids = {id(p) for p in model.encoder.get_input_embeddings().parameters()}
        params = [p for p in model.mlm_head().parameters() if id(p) not in embedding_ids]
        if not params:
            raise ValueError("The masked-LM head has no parameters of its own to warm up.")
        states = {id(p): p.requires_grad for p in model.parameters()}
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        device = self.args.device
        model.to(device)
        model.train()
        optimizer = torch.optim.AdamW(params, lr=self.args.mlm_head_warmup_learning_rate, weight_decay=0.0)
        generator = torch.Generator().manual_seed(int(self.args.seed))
        loader = torch.utils.data.DataLoader(
            data,
            batch_size=self.args.per_device_train_batch_size,
            shuffle=True,
            collate_fn=self.collator,
            generator=generator,
        )
        losses: list[float] = []
        try:
            while len(losses) < steps:
                for batch in loader:
                    labels = batch["labels"].to(device)
                    selected = labels != -100
                    if not bool(selected.any()):
                        continue
                    inputs = {
                        k: batch[k].to(device)
                        for k in ("input_ids", "attention_mask", "token_type_ids")
                        if k in batch
                    }
                    with torch.no_grad():
                        hidden = model.encoder(**inputs, return_dict=True).last_hidden_state
                    logits = model.mlm_head()(hidden[selected])
                    loss = F.cross_entropy(logits.float(), labels[selected])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    losses.append(float(loss.detach()))
                    if len(losses) >= steps:
                        break
        finally:
            for p in model.parameters():
                p.requires_grad_(states[id(p)])
        logger.info(
            "MLM head warm-up: %d steps, loss %.4f (first) -> %.4f (last)", len(losses), losses[0], losses[-1]
        )
        return losses

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        relation_labels = inputs.pop("relation_labels", None)
        entity_positions = inputs.pop("entity_positions")
        hidden, mlm_loss = model(**inputs)
        args = self.args
        loss = args.mlm_weight * mlm_loss
        logs = {"mlm": float(mlm_loss.detach())}
        if self.stage == 2:
            if relation_labels is None:
                raise ValueError("Stage 2 batches need relation labels.")
            base = model.module if hasattr(model, "module") else model
            start, end = relation_span_bounds(entity_positions)
            positives = base.projection(span_mean(hidden, start, end))
            ns, ne, valid = sample_negative_spans(
                inputs["input_ids"],
                inputs["attention_mask"],
                entity_positions,
                self.collator.protected_ids,
                max_span=args.negative_span_max,
                generator=self._span_generator,
            )
            negatives = base.projection(span_mean(hidden, ns, ne))
            out = self.scl(base.anchors, positives, negatives, relation_labels, valid)
            loss = loss + args.scl_weight * out.loss
            logs.update(out.log_dict())
        self._last_components = logs
        return (loss, {"hidden": hidden}) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs = {**logs, **{k: round(v, 4) for k, v in self._last_components.items()}, "stage": self.stage}
        super().log(logs, start_time)

    def train(self, *args: Any, **kwargs: Any):
        """Stage 1 (MSLM) for `stage1_epochs`, then stage 2 (MSLM + SCL) for `stage2_epochs`.

        Each stage gets a fresh optimiser and schedule. Returns the last stage's `TrainOutput`
        (with `metrics["stage1_loss"]` when stage 1 ran)."""
        result = None
        stage1_loss = None
        if self.args.mlm_head_warmup_steps > 0 and not self.warmup_losses:
            self.warmup_losses = self.warm_up_mlm_head()
        plan = (
            (1, self.stage1_dataset, self.args.stage1_epochs),
            (2, self.stage2_dataset, self.args.stage2_epochs),
        )
        for stage, data, epochs in plan:
            if data is None or epochs <= 0 or len(data) == 0:
                continue
            self.stage = stage
            self.train_dataset = data
            self.args.num_train_epochs = epochs
            self.optimizer, self.lr_scheduler = None, None
            result = super().train(*args, **kwargs)
            if stage == 1:
                stage1_loss = result.training_loss
        if result is None:
            raise ValueError("Nothing to train: both stages are empty or have 0 epochs.")
        if stage1_loss is not None:
            result.metrics["stage1_loss"] = stage1_loss
        if self.warmup_losses:
            result.metrics["mlm_head_warmup_first_loss"] = self.warmup_losses[0]
            result.metrics["mlm_head_warmup_last_loss"] = self.warmup_losses[-1]
        return result

    def export_encoder(self) -> tuple[nn.Module, Any]:
        """The pretrained encoder (LoRA merged) and the tokenizer with the markers."""
        model = self.model
        mlm = model.mlm_model
        if hasattr(mlm, "merge_and_unload"):
            mlm = mlm.merge_and_unload()
            model.mlm_model = mlm
        encoder = getattr(mlm, mlm.base_model_prefix)
        return encoder, self.processing_class

    def card_training(self) -> dict[str, Any]:
        """The training section of the encoder's card: both stages' objectives and hyper-parameters."""
        args = self.args
        training = {
            "stage 1 (MSLM)": (
                f"{args.stage1_epochs} epochs; masking p {args.p_between} between the entities, "
                f"{args.p_entity} entity tokens, {args.p_other} others"
            ),
            "stage 2 (MSLM + SCL)": f"{args.stage2_epochs} epochs; loss = {args.mlm_weight} * MLM + "
            f"{args.scl_weight} * SCL (span-level contrastive, temperature {args.scl_temperature}, "
            f"negative spans of 1-{args.negative_span_max} tokens, projection {args.projection_dim})",
            "relations (stage-2 anchors)": len(self.relations),
            "entity markers": args.marker_scheme,
            "learning rate": args.learning_rate,
            "batch size (all processes)": args.per_device_train_batch_size * max(args.world_size, 1),
            "max sequence length": args.max_seq_length,
            "explanations as a second segment": args.with_explanations,
            "MLM-head warm-up (encoder frozen)": (
                f"{args.mlm_head_warmup_steps} steps at {args.mlm_head_warmup_learning_rate}"
                if args.mlm_head_warmup_steps
                else "none"
            ),
        }
        if args.encoder_learning_rate is not None:
            training["encoder learning rate"] = args.encoder_learning_rate
        if args.freeze_layers:
            training["frozen"] = f"embeddings and the lowest {args.freeze_layers} layers"
        peft_config = getattr(self.model.mlm_model, "peft_config", None)
        if peft_config:
            c = next(iter(peft_config.values()))
            training["LoRA (merged into the saved weights)"] = (
                f"r={getattr(c, 'r', '?')}, alpha={getattr(c, 'lora_alpha', '?')}, "
                f"targets={sorted(getattr(c, 'target_modules', None) or [])}"
            )
        return training

    def save_encoder(self, output_dir: str | os.PathLike, card_info: ModelCardInfo | None = None) -> Path:
        """Write the encoder and tokenizer as a plain transformers folder with a model card, atomically.

        Args:
            output_dir (`str | os.PathLike`): the target folder (written whole or not at all).
            card_info ([`ModelCardInfo`], *optional*): base model, datasets, license for the card; the
                training section is filled from the run.
        """

        training = self.card_training()  # before the export merges LoRA away
        encoder, tokenizer = self.export_encoder()
        info = card_info if card_info is not None else ModelCardInfo()
        info = replace(info, training={**training, **info.training})
        args = self.args
        return save_with_card(
            encoder,
            output_dir,
            info,
            "tkre_encoder.md",
            tokenizer=tokenizer,
            details={
                "title": "TKRE encoder",
                "marker_scheme": args.marker_scheme,
                "relations": list(self.relations),
                "marked_example": _card_example(
                    args.marker_scheme, args.entity_types, args.default_entity_type
                ),
            },
            pipeline_tag="feature-extraction",
            tags=("relation-extraction", "tkre", "feature-extraction"),
            citations=(SpanContrastiveLoss.citation,),
        )


def _card_example(scheme: str, entity_types: Sequence[str], default_type: str) -> str:
    example = RelationExample(
        "The company fabricates plastic chairs .".split(), subject=(1, 2), object=(4, 5)
    )
    return " ".join(mark_words(example, scheme, entity_types, default_type)[0])


__all__ = [
    "RelationClassificationTrainer",
    "RelationFinetuneConfig",
    "SpanContrastiveLoss",
    "TKREConfig",
    "TKREPretrainer",
    "TKREPretrainingModel",
    "freeze_lower_layers",
    "relation_span_bounds",
    "sample_negative_spans",
    "span_mean",
]
