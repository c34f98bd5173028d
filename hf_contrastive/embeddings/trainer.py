"""`ContrastiveTrainer`: sentence-embedding training through `transformers.Trainer`.

The training loop, optimiser, schedulers, checkpointing, mixed precision and multi-device
training are `Trainer`'s; this class only decides how a batch of role-named texts becomes
embeddings and a loss (`compute_loss`), how batches are drawn (no duplicate texts per batch),
and what evaluation and the model card report.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from hf_contrastive.core import distributed
from hf_contrastive.core.boundary import position_limit
from hf_contrastive.core.checkpoint import AtomicCheckpointMixin
from hf_contrastive.core.data.checks import require_rows
from hf_contrastive.core.data.collator import (
    ContrastiveDataCollator,
    LanguageIdCollator,
    PromptingCollator,
    RowLabelCollator,
    length_buckets,
)
from hf_contrastive.core.data.columns import ColumnRoles, resolve_column_roles
from hf_contrastive.core.data.samplers import NoDuplicatesBatchSampler
from hf_contrastive.core.engines import EngineMixin, gradient_sync_off
from hf_contrastive.core.hub.card import EvalEntry
from hf_contrastive.core.losses import EmbeddingRegressionLoss, GradCache, InfoNCELoss, MultiCSRLoss
from hf_contrastive.core.losses import registry as loss_registry
from hf_contrastive.core.momentum import MomentumEncoder
from hf_contrastive.core.peft import apply_peft
from hf_contrastive.embeddings.configuration import apply_prompt_template, prompt_template_tokens
from hf_contrastive.embeddings.modeling import SentenceEncoder
from hf_contrastive.embeddings.sts import STSEvaluator
from hf_contrastive.embeddings.whitening import WhitenedCSELoss

logger = logging.getLogger(__name__)

# `loss="auto"`: the loss implied by the data layout.
AUTO_LOSSES = {"unsupervised": "simcse_unsup", "pairs": "infonce", "scored_pairs": "cosent"}
CHECKPOINT_STATE_NAME = "contrastive_state.safetensors"


@dataclass
class ContrastiveConfig(TrainingArguments):
    r"""Training arguments of [`ContrastiveTrainer`]: `TrainingArguments` plus the objective.

    Defaults follow SimCSE (Gao et al. 2021): temperature 0.05, learning rate 3e-5, batch 64,
    one epoch, max length 32 for sentence data (set `max_seq_length`).

    Args:
        loss (`str`, defaults to `"auto"`):
            `auto` picks from the dataset layout: one text column -> `simcse_unsup`, pairs or triples
            -> `infonce`, scored pairs -> `cosent`. Also `mnrl` (= infonce with scale 20),
            `simcse_sup`, `multicsr` (needs `reference_model`), `regression` (scored pairs, MSE of
            cosine to the score rescaled to [0, 1]), `moco` (see `momentum`), `whitenedcse` (WhitenedCSE: needs
            a model config with `whitening_group_size`; see `num_views`), and any loss registered
            with `hf_contrastive.core.losses.register_loss` (`available_losses()` lists them; aliases
            are resolved to the registered name).
        temperature (`float`, defaults to 0.05): softmax temperature of the InfoNCE-family losses
            (CoSENT uses it as 1 / scale, 0.05 -> 20).
        learnable_temperature (`bool`, defaults to `False`): learn the scale (CLIP-style), clamped.
        hard_negative_weight (`float`, defaults to 0.0): logit bonus on each anchor's own hard negatives.
        symmetric (`bool`, defaults to `False`): add the positive -> anchor InfoNCE term.
        gather_across_devices (`bool`, defaults to `True`): negatives from every process when distributed.
        false_negative_threshold (`float`, *optional*): MultiCSR phi (0.95 in the paper).
        max_seq_length (`int`, *optional*): truncation length; defaults to the model's `max_seq_length`.
        no_duplicates (`bool`, defaults to `True`): batches never repeat a text (no false negatives).
        length_bucketed_forward (`bool`, defaults to `True`): embed batches of 64 rows or more in groups
            of similar length, each trimmed to its longest text (same embeddings, fewer padded tokens).
        anchor_column / positive_column / negative_columns / score_column: explicit column roles. A detected
            score column (`label`, `score`, ...) holding integers or class labels is refused (NLI class ids are
            not similarities); name it with `score_column` when the integers are similarity scores.
        dataset_name (`str`, *optional*): Hub id of the training data, for the model card.
        gradcache_mini_batch_size (`int`, *optional*): GradCache (Gao et al. 2021): embed the batch in
            mini-batches of this many texts, first without graph, then again with graph to back-propagate
            the cached embedding gradients, so a batch of thousands costs the activation memory of one
            mini-batch (with the same loss and gradients). `None` (default) disables it.
        gradcache_token_budget (`int`, *optional*): GradCache with mini-batches packed by padded tokens
            (rows x longest row <= budget) instead of by count.
        momentum (`float`, defaults to 0.9995): `loss="moco"` (MoCo / Contriever pre-training): the key
            encoder is an exponential moving average of the trained one with this momentum.
        queue_size (`int`, defaults to 65536): `loss="moco"`: past keys kept as negatives (per queue); must
            be a multiple of the global batch (per-device batch x processes), as in MoCo.
        language_column (`str`, *optional*): `loss="moco"`: column naming each row's language; with
            `languages` it selects one queue per language (CCP, Wu et al. 2022).
        languages (`list[str]`, *optional*): the languages of `language_column`, one queue each.
        query_batch_norm (`bool`, defaults to `False`): `loss="moco"`: batch-norm on the query side only
            (CCP's asymmetric batch normalisation).
        num_views (`int`, *optional*): dropout views per sentence in the unsupervised layout, for losses that take
            several (`whitenedcse`: 3, the paper's); at least 2. `None` (default) keeps the loss's own default.
        domain_column (`str`, *optional*): column naming each row's domain; its values are mapped through the
            model config's `domain2id` and passed to the model as `domain_ids` (one per embedded row), which
            routes a mixture-of-experts encoder's experts (Hallee et al. 2024).
    """

    loss: str = field(
        default="auto",
        metadata={
            "help": "`auto` (picked from the data layout) or a registered loss name (`available_losses()`)."
        },
    )
    temperature: float = field(
        default=0.05, metadata={"help": "Softmax temperature (scale = 1 / temperature)."}
    )
    learnable_temperature: bool = field(default=False, metadata={"help": "Learn the temperature."})
    hard_negative_weight: float = field(default=0.0, metadata={"help": "Logit bonus on own hard negatives."})
    symmetric: bool = field(default=False, metadata={"help": "Add the positive->anchor term."})
    gather_across_devices: bool = field(default=True, metadata={"help": "Cross-device negatives."})
    false_negative_threshold: float | None = field(default=None, metadata={"help": "MultiCSR phi."})
    max_seq_length: int | None = field(default=None, metadata={"help": "Truncation length."})
    no_duplicates: bool = field(default=True, metadata={"help": "No repeated text within a batch."})
    length_bucketed_forward: bool = field(
        default=True, metadata={"help": "Embed long batches in groups of similar length (less padding)."}
    )
    anchor_column: str | None = field(default=None, metadata={"help": "Anchor column name."})
    positive_column: str | None = field(default=None, metadata={"help": "Positive column name."})
    negative_columns: list[str] | None = field(default=None, metadata={"help": "Negative column names."})
    score_column: str | None = field(default=None, metadata={"help": "Score column name."})
    dataset_name: str | None = field(default=None, metadata={"help": "Hub id of the training data."})
    gradcache_mini_batch_size: int | None = field(
        default=None, metadata={"help": "GradCache: texts per forward pass (None: off)."}
    )
    gradcache_token_budget: int | None = field(
        default=None, metadata={"help": "GradCache: padded tokens per forward pass (None: off)."}
    )
    momentum: float = field(default=0.9995, metadata={"help": "MoCo: key-encoder EMA momentum."})
    queue_size: int = field(default=65536, metadata={"help": "MoCo: keys per queue."})
    language_column: str | None = field(default=None, metadata={"help": "MoCo/CCP: language column."})
    languages: list[str] | None = field(default=None, metadata={"help": "MoCo/CCP: one queue per language."})
    query_batch_norm: bool = field(default=False, metadata={"help": "CCP: batch norm on the query side."})
    num_views: int | None = field(
        default=None, metadata={"help": "Dropout views per sentence (whitenedcse; None: the loss's default)."}
    )
    domain_column: str | None = field(
        default=None, metadata={"help": "Column of each row's domain (routes a MoE encoder's experts)."}
    )
    # Trainer defaults that are wrong for role-named text columns / sentence data.
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the role columns."})
    learning_rate: float = field(default=3e-5, metadata={"help": "SimCSE's learning rate."})
    per_device_train_batch_size: int = field(default=64, metadata={"help": "SimCSE's batch size."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs."})

    def __post_init__(self) -> None:
        if self.loss != "auto":
            if not loss_registry.is_registered(self.loss):
                raise ValueError(
                    f"loss must be one of {('auto', *loss_registry.available_losses())}, got {self.loss!r}."
                )
            self.loss = loss_registry.resolve_loss_name(self.loss)
        if not (
            isinstance(self.temperature, (int, float))
            and math.isfinite(self.temperature)
            and self.temperature > 0
        ):
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature!r}.")
        if self.num_views is not None and (
            isinstance(self.num_views, bool) or int(self.num_views) != self.num_views or self.num_views < 2
        ):
            raise ValueError(f"num_views must be an integer >= 2 or None, got {self.num_views!r}.")
        if self.false_negative_threshold is not None and not -1.0 <= self.false_negative_threshold <= 1.0:
            raise ValueError(
                f"false_negative_threshold is a cosine in [-1, 1], got {self.false_negative_threshold}."
            )
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available() and not self.use_cpu:
            # Launched by torchrun / accelerate on a machine without GPUs: transformers only sets up the
            # gloo process group for CPU when use_cpu is on; without it every process would train alone.
            self.use_cpu = True
        if isinstance(self.negative_columns, str):
            self.negative_columns = [c.strip() for c in self.negative_columns.split(",") if c.strip()]
        if self.gradcache_mini_batch_size is not None and self.gradcache_token_budget is not None:
            raise ValueError(
                "Give gradcache_mini_batch_size or gradcache_token_budget, not both (got "
                f"{self.gradcache_mini_batch_size} and {self.gradcache_token_budget})."
            )
        for name in ("gradcache_mini_batch_size", "gradcache_token_budget"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or int(value) != value or int(value) < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}.")
        if (
            self.gradcache_mini_batch_size is not None
            and self.gradcache_mini_batch_size > self.per_device_train_batch_size
        ):
            raise ValueError(
                f"gradcache_mini_batch_size={self.gradcache_mini_batch_size} is larger than the batch "
                f"(per_device_train_batch_size={self.per_device_train_batch_size}): GradCache would cache "
                "nothing. Use a mini-batch smaller than the batch, or leave GradCache off."
            )
        if isinstance(self.languages, str):
            self.languages = [c.strip() for c in self.languages.split(",") if c.strip()]
        super().__post_init__()
        if self.loss == "moco":
            if not (isinstance(self.momentum, (int, float)) and 0.0 <= self.momentum < 1.0):
                raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}.")
            global_batch = self.per_device_train_batch_size * max(self.world_size, 1)
            if (
                isinstance(self.queue_size, bool)
                or int(self.queue_size) < 1
                or self.queue_size % global_batch
            ):
                raise ValueError(
                    f"queue_size={self.queue_size} must be a positive multiple of the global batch "
                    f"({self.per_device_train_batch_size} per device x {max(self.world_size, 1)} processes = "
                    f"{global_batch}), so that every step replaces whole blocks of the queue (MoCo)."
                )
            if self.gradcache:
                raise ValueError("loss='moco' does not combine with GradCache (its keys carry no gradient).")
            if (self.language_column is None) != (not self.languages):
                raise ValueError(
                    "Per-language queues need both language_column and languages (got "
                    f"language_column={self.language_column!r}, languages={self.languages!r})."
                )

    @property
    def gradcache(self) -> bool:
        """Whether GradCache is on (a mini-batch size or a token budget is set)."""
        return self.gradcache_mini_batch_size is not None or self.gradcache_token_budget is not None


def build_loss(config: ContrastiveConfig, roles: ColumnRoles, model: Any = None) -> nn.Module:
    """The loss module named by `config.loss` (or implied by the data layout for `auto`).

    Args:
        config (`ContrastiveConfig`): the training arguments (the loss's hyper-parameters).
        roles (`ColumnRoles`): the dataset's column roles; the loss must accept their layout.
        model (*optional*): the model being trained (MoCo reads its embedding size).

    Built through `hf_contrastive.core.losses.registry`, so any registered loss works.
    """
    name = AUTO_LOSSES[roles.layout] if config.loss == "auto" else config.loss
    return loss_registry.build_loss(name, config, roles, model)


class ContrastiveTrainer(AtomicCheckpointMixin, EngineMixin, Trainer):
    r"""`Trainer` for sentence embeddings with in-batch negatives (SimCSE and successors).

    Args:
        model (`Any`, *optional*): a [`SentenceEncoder`] (or a path / Hub id to load one).
        args (`ContrastiveConfig | None`, *optional*): [`ContrastiveConfig`].
        train_dataset (`Any`, *optional*): a `datasets.Dataset` whose columns are named by role (see
            `hf_contrastive.core.data.columns`).
        eval_dataset (`Any`, *optional*): optional dataset of the same layout (reports `eval_loss`).
        sts_evaluator (`STSEvaluator | Any`, *optional*): an [`STSEvaluator`] (or data it accepts) reported as `eval_sts_spearman`.
        evaluators (`list | None`, *optional*): more evaluators run by `evaluate()`: callables taking the encoder and returning a
            dict of figures (for example a `RetrievalEvaluator`, giving `eval_<name>_ndcg@10`).
        loss (`nn.Module | None`, *optional*): a loss module to use instead of the one `args.loss` names.
        reference_model (`nn.Module | None`, *optional*): frozen encoder for false-negative masking (MultiCSR).
        peft_config (`Any`, *optional*): a `peft` config (e.g. `LoraConfig`); the model is wrapped with
            `get_peft_model`, as TRL does.
        processing_class (`Any`, *optional*): tokenizer; defaults to the one loaded with the model.
    """

    def __init__(
        self,
        model: Any = None,
        args: ContrastiveConfig | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        sts_evaluator: STSEvaluator | Any = None,
        evaluators: list | None = None,
        loss: nn.Module | None = None,
        reference_model: nn.Module | None = None,
        peft_config: Any = None,
        callbacks: list | None = None,
        optimizers: tuple = (None, None),
        **kwargs: Any,
    ) -> None:

        if args is None:
            args = ContrastiveConfig(output_dir="hf-contrastive-output")
        if not isinstance(args, ContrastiveConfig):
            raise TypeError(f"args must be a ContrastiveConfig, got {type(args).__name__}.")
        if isinstance(model, (str, os.PathLike)):
            model = SentenceEncoder.from_pretrained(model)
        if model is None:
            raise ValueError("ContrastiveTrainer needs a model (a SentenceEncoder or a path to one).")
        tokenizer = processing_class if processing_class is not None else getattr(model, "tokenizer", None)
        if tokenizer is None:
            raise ValueError(
                "No tokenizer: pass processing_class= or load the model from a folder that has one."
            )
        if getattr(model, "tokenizer", None) is None and hasattr(model, "card_info"):
            model.tokenizer = tokenizer
        if train_dataset is None:
            raise ValueError("ContrastiveTrainer needs a train_dataset.")
        columns = getattr(train_dataset, "column_names", None)
        if columns is None:
            raise TypeError(f"train_dataset must be a datasets.Dataset, got {type(train_dataset).__name__}.")
        require_rows(train_dataset, name="train_dataset", owner=type(self).__name__)
        require_rows(eval_dataset, name="eval_dataset", owner=type(self).__name__)
        self.roles = resolve_column_roles(
            columns,
            args.anchor_column,
            args.positive_column,
            args.negative_columns,
            args.score_column,
            features=getattr(train_dataset, "features", None),
        )
        self.loss_fn = loss if loss is not None else build_loss(args, self.roles, model)
        if args.gradcache and not isinstance(self.loss_fn, GradCache):
            self.loss_fn = GradCache(
                self.loss_fn,
                mini_batch_size=args.gradcache_mini_batch_size,
                token_budget=args.gradcache_token_budget,
            )
        in_batch = isinstance(_inner_loss(self.loss_fn), (InfoNCELoss, WhitenedCSELoss))
        views = getattr(
            _inner_loss(self.loss_fn), "num_views", 2 if self.roles.layout == "unsupervised" else None
        )
        if args.num_views is not None and args.num_views != views:
            raise ValueError(
                f"num_views={args.num_views} is not used by {type(_inner_loss(self.loss_fn)).__name__} (it takes "
                f"{views or 'no'} views); num_views applies to losses that take several dropout views "
                "(loss='whitenedcse') on a one-column dataset."
            )
        if (
            in_batch
            and args.per_device_train_batch_size * max(args.world_size, 1) < 2
            and not self.roles.negatives
        ):
            raise ValueError(
                "Batch size 1 with in-batch negatives and no hard-negative column leaves no negatives: raise "
                "per_device_train_batch_size (SimCSE uses 64) or add negative columns."
            )
        # In-batch negatives without hard negatives need two rows per batch: a 1-row tail batch is merged
        # into the batch before it or dropped (see get_train_dataloader), never trained on.
        self._min_batch_rows = 2 if in_batch and not self.roles.negatives else 1
        # (WhitenedCSE: a batch needs more rows than a whitening group has channels)
        whitening_rows = int(getattr(_inner_loss(self.loss_fn), "min_batch_rows", 1))
        if len(train_dataset) < whitening_rows:
            raise ValueError(
                f"train_dataset has {len(train_dataset)} rows, but {type(_inner_loss(self.loss_fn)).__name__} needs "
                f"batches of at least {whitening_rows} rows (whitening groups of {whitening_rows - 1} channels)."
            )
        self._min_batch_rows = max(self._min_batch_rows, whitening_rows)
        if len(train_dataset) < self._min_batch_rows:
            raise ValueError(
                f"train_dataset has {len(train_dataset)} row: in-batch negatives without a hard-negative column "
                "need at least 2 rows per batch. Add rows or negative columns."
            )
        if isinstance(_inner_loss(self.loss_fn), MultiCSRLoss) and reference_model is None:
            raise ValueError(
                "loss='multicsr' needs reference_model= (the frozen encoder that flags false negatives)."
            )
        if peft_config is not None:
            model = apply_peft(model, peft_config)
        self.reference_model = reference_model
        if reference_model is not None:
            reference_model.eval().requires_grad_(False)
        if sts_evaluator is not None and not isinstance(sts_evaluator, STSEvaluator):
            sts_evaluator = STSEvaluator(sts_evaluator)
        self.sts_evaluator = sts_evaluator
        self.evaluators = list(evaluators or [])
        for ev in self.evaluators:
            if not callable(ev):
                raise TypeError(f"evaluators= takes callables (encoder -> dict of figures); got {ev!r}.")
        base = _base_encoder(model)
        self._two_towers = getattr(getattr(base, "config", None), "shared_towers", True) is False
        max_length = args.max_seq_length or getattr(getattr(base, "config", None), "max_seq_length", None)
        template = getattr(getattr(base, "config", None), "prompt_template", None)
        text_tokens = max_length
        if template and max_length is not None:
            # As in `SentenceEncoder.encode`: texts are cut to the limit, the template's tokens come on top.
            max_length += prompt_template_tokens(template, tokenizer)
        collator = kwargs.pop("data_collator", None) or ContrastiveDataCollator(
            tokenizer, self.roles, max_length=max_length, position_limit=position_limit(base)
        )
        if template:
            collator = TemplateCollator(collator, template, self.roles.text_columns, tokenizer, text_tokens)
        if args.language_column is not None:
            collator = LanguageIdCollator(collator, args.language_column, list(args.languages or []))
        if args.domain_column is not None:
            domain2id = getattr(getattr(base, "config", None), "domain2id", None)
            if not domain2id:
                raise ValueError(
                    f"domain_column={args.domain_column!r} needs a model whose config has a domain2id label map "
                    f"(a mixture-of-experts encoder); {type(base).__name__} has none."
                )
            collator = RowLabelCollator(collator, args.domain_column, domain2id, key="domain_ids")
        prompts = getattr(base, "role_prompts", None)
        if prompts and any(prompts.values()):
            # Bi-encoder prompts: anchors are queries, positives and negatives are documents.
            by_column = {self.roles.anchor: prompts.get("query", "")}
            by_column.update({c: prompts.get("document", "") for c in self.roles.text_columns[1:]})
            collator = PromptingCollator(collator, by_column)
        # Trainer refuses an evaluation schedule without an eval_dataset; an STS evaluator is one.
        strategy = args.eval_strategy
        sts_only = (
            (sts_evaluator is not None or bool(self.evaluators))
            and eval_dataset is None
            and str(strategy) not in ("no", "IntervalStrategy.NO")
        )
        if sts_only:
            args.eval_strategy = "no"
        super().__init__(
            model=model,
            args=args,
            data_collator=collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            callbacks=callbacks,
            optimizers=optimizers,
            **kwargs,
        )
        if sts_only:
            args.eval_strategy = strategy
        self.loss_fn.to(self.args.device)
        if self.reference_model is not None:
            self.reference_model.to(self.args.device)
        # Trainer zeroes the model's gradients after each optimiser step, not the loss's own
        # parameters' (learnable temperature, CCP batch norm): without this they would accumulate.
        self.add_callback(_ZeroLossGrad(self.loss_fn))
        self.key_encoder: MomentumEncoder | None = None
        if getattr(self.loss_fn, "uses_momentum_encoder", False):
            self.key_encoder = MomentumEncoder(self.model, momentum=args.momentum).to(self.args.device)
        self._components: dict[str, list[float]] = defaultdict(list)

    # -- data -----------------------------------------------------------------------------------
    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        ds = self.train_dataset
        cols = [c for c in self.roles.text_columns if c in ds.column_names]
        if not self.args.no_duplicates or not cols:  # (pre-tokenised only: duplicates cannot be read off)
            return self._plain_train_dataloader()
        row_texts = list(zip(*(ds[c] for c in cols)))
        sampler = NoDuplicatesBatchSampler(
            row_texts,
            batch_size=self._train_batch_size,
            drop_last=self.args.dataloader_drop_last,
            seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
            min_batch_size=min(self._min_batch_rows, self._train_batch_size),
        )
        loader = torch.utils.data.DataLoader(
            ds,
            batch_sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory and torch.cuda.is_available(),
        )
        return self.accelerator.prepare(loader)

    def _plain_train_dataloader(self) -> torch.utils.data.DataLoader:
        """`Trainer`'s own loader; a tail batch too small for in-batch negatives is dropped (and logged)."""
        n, size = len(self.train_dataset), self._train_batch_size
        tail = n % size
        if (
            not (0 < tail < self._min_batch_rows)
            or self.args.dataloader_drop_last
            or self.args.world_size > 1
        ):
            return super().get_train_dataloader()
        logger.warning(
            "%d rows at batch size %d leave a last batch of %d row(s), which has no in-batch negatives: it is "
            "dropped each epoch (a different random row each time). Set dataloader_drop_last=True to silence "
            "this, or add rows or hard-negative columns.",
            n,
            size,
            tail,
        )
        self.args.dataloader_drop_last = True
        try:
            return super().get_train_dataloader()
        finally:
            self.args.dataloader_drop_last = False

    def _parameters_outside_model(self) -> list[nn.Parameter]:
        return [p for p in self.loss_fn.parameters() if p.requires_grad]

    def _uses_gradcache(self) -> bool:
        return isinstance(self.loss_fn, GradCache)

    def _copies_model_weights(self) -> bool:
        return self.key_encoder is not None

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        extra = [p for p in self.loss_fn.parameters() if p.requires_grad]
        if extra and not any(p is q for g in optimizer.param_groups for p in g["params"] for q in extra):
            optimizer.add_param_group({"params": extra, "weight_decay": 0.0})
        return optimizer

    # -- momentum contrast ----------------------------------------------------------------------
    def _moco_loss(self, model, inputs: dict[str, Any]) -> tuple[Any, torch.Tensor]:
        features, _, _ = self._embedding_inputs(inputs)
        queue_ids = inputs.get("queue_ids")
        n = features_rows(features) // 2
        query_rows = {k: v[:n] if isinstance(v, torch.Tensor) and v.dim() else v for k, v in features.items()}
        key_rows = {k: v[n:] if isinstance(v, torch.Tensor) and v.dim() else v for k, v in features.items()}
        unwrapped = self.accelerator.unwrap_model(model)
        if model.training and int(self.key_encoder.num_updates) < self.state.global_step:
            # k <- m k + (1 - m) q once per optimiser step, before the step's keys (MoCo).
            self.key_encoder.update(unwrapped)
        q = self._forward(model, query_rows)
        self.key_encoder.encoder.train(model.training)
        with torch.no_grad():
            k = self.key_encoder(**key_rows).embeddings
        self._check_embeddings(q)
        out = self.loss_fn(q, k, queue_ids)
        if model.training:
            self.loss_fn.enqueue(
                distributed.gather_no_grad(k),
                None if queue_ids is None else distributed.gather_no_grad(queue_ids),
            )
        return out, q

    # -- checkpoint state (queue, key encoder, loss parameters) ----------------------------------
    # Saved inside each checkpoint, in the same atomic step as the rest (`AtomicCheckpointMixin`).
    library_state_name = CHECKPOINT_STATE_NAME

    def _library_state(self) -> dict[str, torch.Tensor]:
        tensors = {
            f"loss.{k}": v.detach().cpu().contiguous().clone() for k, v in self.loss_fn.state_dict().items()
        }
        if self.key_encoder is not None:
            tensors.update(
                {
                    f"key_encoder.{k}": v.detach().cpu().contiguous().clone()
                    for k, v in self.key_encoder.state_dict().items()
                }
            )
        return tensors

    def _library_state_required(self) -> bool:
        # A learnable temperature or a MoCo queue / key encoder reset to its initial value would make the
        # resumed run silently differ from the uninterrupted one.
        return self.key_encoder is not None or any(p.requires_grad for p in self.loss_fn.parameters())

    def _load_library_state(self, tensors: dict[str, torch.Tensor]) -> None:
        loss_state = {k[len("loss.") :]: v for k, v in tensors.items() if k.startswith("loss.")}
        self.loss_fn.load_state_dict(loss_state, strict=True)
        if self.key_encoder is not None:
            key_state = {
                k[len("key_encoder.") :]: v for k, v in tensors.items() if k.startswith("key_encoder.")
            }
            self.key_encoder.load_state_dict(key_state, strict=True)

    # -- loss -----------------------------------------------------------------------------------
    def _embedding_inputs(self, inputs: dict[str, Any]) -> tuple[dict[str, torch.Tensor], Any, int]:
        """(features of every row to embed, scores, number of role blocks in those rows)."""
        inputs = dict(inputs)
        scores = inputs.pop("scores", None)
        inputs.pop("queue_ids", None)
        if self.roles.layout == "unsupervised":
            # One forward of V*B rows: dropout draws an independent mask for each copy (SimCSE: V = 2; a
            # loss asks for more views with a `num_views` attribute, as WhitenedCSE does).
            views = self._num_views()
            return {k: torch.cat([v] * views) for k, v in inputs.items()}, scores, views
        return inputs, scores, len(self.roles.text_columns)

    def _num_views(self) -> int:
        """Dropout views per sentence in the unsupervised layout (the loss's `num_views`, 2 by default)."""
        views = int(getattr(_inner_loss(self.loss_fn), "num_views", 2))
        if views < 2:
            raise ValueError(
                f"The loss asks for {views} view(s) per sentence; unsupervised training needs >= 2."
            )
        return views

    def _loss_on_embeddings(
        self, emb: torch.Tensor, inputs: dict[str, Any], scores: Any, n_blocks: int
    ) -> tuple[tuple, dict]:
        """Arguments of `self.loss_fn` for the embeddings `emb` of all rows (in role blocks)."""
        parts = emb.split(emb.shape[0] // n_blocks)
        if self.roles.layout == "unsupervised":
            return tuple(parts), {}
        if self.roles.layout == "scored_pairs":
            if isinstance(_inner_loss(self.loss_fn), EmbeddingRegressionLoss):
                return (parts[0], parts[1]), {"scores": self._rescale(scores)}
            return (parts[0], parts[1], scores), {}
        negatives = torch.stack(parts[2:], dim=1) if n_blocks > 2 else None
        ref = self._reference_embeddings({k: v for k, v in inputs.items() if k != "scores"}, n_blocks)
        return (parts[0], parts[1], negatives), ref

    def _loss_scale(self, model, local_rows: int) -> float:
        if (
            model.training
            and isinstance(_inner_loss(self.loss_fn), (InfoNCELoss, WhitenedCSELoss))
            and distributed.is_distributed()
        ):
            # Each rank's loss is a mean over its own anchors; with unequal local batches (the last
            # one of an epoch) this factor makes the DDP-averaged gradient the global-batch gradient.
            return distributed.global_mean_factor(local_rows)
        return 1.0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.key_encoder is not None:
            out, emb = self._moco_loss(model, inputs)
            if not torch.isfinite(out.loss.detach()):
                self._stop_on_nan(float(out.loss.detach()))
            if model.training:
                for k, v in out.components.items():
                    self._components[k].append(float(v))
            return (out.loss, {"embeddings": emb}) if return_outputs else out.loss
        features, scores, n_blocks = self._embedding_inputs(inputs)
        emb = self._embed(model, features, n_queries=features_rows(features) // n_blocks)
        self._check_embeddings(emb)
        args, kwargs = self._loss_on_embeddings(emb, inputs, scores, n_blocks)
        out = self.loss_fn(*args, **kwargs)
        loss = out.loss * self._loss_scale(model, emb.shape[0] // max(n_blocks, 1))
        if not torch.isfinite(loss.detach()):
            self._stop_on_nan(float(loss.detach()))
        if model.training:
            for k, v in out.components.items():
                self._components[k].append(float(v))
        return (loss, {"embeddings": emb}) if return_outputs else loss

    def _gradcache_step(self, model, inputs, num_items_in_batch=None) -> torch.Tensor:
        """One training step with GradCache: the full-batch loss, the memory of one mini-batch."""
        if self.loss_is_scaled_for_ga is not None:
            scaled_for_ga = self.loss_is_scaled_for_ga
        else:
            scaled_for_ga = (
                self.model_accepts_loss_kwargs and num_items_in_batch is not None
            ) or self.compute_loss_func is not None
        ga = 1 if scaled_for_ga else self.current_gradient_accumulation_steps
        features, scores, n_blocks = self._embedding_inputs(inputs)
        n_queries = features_rows(features) // n_blocks
        local = features_rows(features) // n_blocks
        factor = self._loss_scale(model, local) / ga
        unwrapped = self.accelerator.unwrap_model(model)

        def encode(m):
            def run(chunk: dict[str, torch.Tensor]) -> torch.Tensor:
                rows = chunk["_rows"]
                feats = {k: v for k, v in chunk.items() if k != "_rows"}
                return self._forward(m, feats, n_queries=int((rows < n_queries).sum()))

            return run

        out = self.loss_fn.backward(
            encode(model),
            {**features, "_rows": torch.arange(features_rows(features))},
            lambda emb: self._loss_on_embeddings(emb, inputs, scores, n_blocks),
            encode_no_grad=encode(unwrapped),
            loss_scale=factor,
            backward=self.accelerator.backward,
            no_sync=gradient_sync_off(self, model),
            check_embeddings=self._check_embeddings,
        )
        loss = out.loss * self._loss_scale(model, local)
        if not torch.isfinite(loss):
            self._stop_on_nan(float(loss))
        for k, v in out.components.items():
            self._components[k].append(float(v))
        return loss / ga

    def training_step(self, model, inputs, num_items_in_batch=None):
        if isinstance(self.loss_fn, GradCache):
            model.train()
            if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
                self.optimizer.train()
            inputs = self._prepare_inputs(inputs)
            with self.compute_loss_context_manager():
                loss = self._gradcache_step(model, inputs, num_items_in_batch)
        else:
            loss = super().training_step(model, inputs, num_items_in_batch)
        # The loss's own parameters (a learnable temperature) live outside the DDP-wrapped model,
        # so DDP does not average their gradients: do it here, or the ranks' scales drift apart.
        distributed.average_gradients(self.loss_fn.parameters())
        return loss.detach()

    def _embed(self, model, inputs: dict[str, torch.Tensor], n_queries: int = 0) -> torch.Tensor:
        """Embeddings of every row of a padded batch, in row order.

        One padded batch of all roles pads short texts to the longest of the whole batch (about 3x the
        real tokens on SNLI pairs); large batches are embedded in groups of similar length instead.
        `n_queries`: the first rows are queries (a bi-encoder with separate towers routes them).
        """
        # A DDP-wrapped model expects one forward per backward (its gradient reducer is armed per
        # forward), so bucketing is used only in single-process training; a two-tower bi-encoder
        # needs its query rows first, so it is not bucketed either.
        bucketed = (
            self.args.length_bucketed_forward and not distributed.is_distributed() and not self._two_towers
        )
        groups = length_buckets(inputs) if bucketed else [(None, inputs)]
        if len(groups) == 1:
            return self._forward(model, groups[0][1], n_queries)
        emb = torch.cat([self._forward(model, features) for _, features in groups])
        order = torch.cat([idx for idx, _ in groups]).to(emb.device)
        return emb[torch.argsort(order)]

    def _forward(self, model, features: dict[str, torch.Tensor], n_queries: int = 0) -> torch.Tensor:
        if self._two_towers:
            return model(**features, num_queries=n_queries).embeddings
        return model(**features).embeddings

    def _rescale(self, scores: torch.Tensor) -> torch.Tensor:
        lo, hi = float(scores.min()), float(scores.max())
        # STS scores (0-5) are mapped to [0, 1]; scores already in [0, 1] stay as they are.
        return scores / 5.0 if hi > 1.0 and lo >= 0.0 and hi <= 5.0 else scores

    def _reference_embeddings(self, inputs: dict[str, torch.Tensor], n_roles: int) -> dict[str, torch.Tensor]:
        if self.reference_model is None:
            return {}
        with torch.no_grad():
            ref = self.reference_model(**inputs).embeddings.detach()
        parts = ref.split(ref.shape[0] // n_roles)
        out = {"reference_anchor": parts[0], "reference_positive": parts[1]}
        if n_roles > 2:
            out["reference_negatives"] = torch.stack(parts[2:], dim=1)
        return out

    def _check_embeddings(self, emb: torch.Tensor) -> None:
        if not torch.isfinite(emb.detach()).all():
            self._stop_on_nan(float("nan"))

    def _stop_on_nan(self, value: float) -> None:
        last = get_last_checkpoint(self.args.output_dir) if os.path.isdir(self.args.output_dir) else None
        raise FloatingPointError(
            f"Loss became {value} at step {self.state.global_step}: training stopped (lower the learning rate, "
            "check the data, or use fp32). "
            + (f"The last good checkpoint is {last}." if last else "No checkpoint was written before it.")
        )

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._components:
            for k, values in self._components.items():
                logs[k] = round(sum(values) / len(values), 6)
            self._components.clear()
        super().log(logs, start_time)

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate(
        self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        """`Trainer.evaluate` (loss on an eval dataset, if any) plus the STS evaluator's and the `evaluators=`'
        figures, all prefixed `{metric_key_prefix}_`; STS results are also recorded for the model card."""
        metrics: dict[str, float] = {}
        if eval_dataset is not None or self.eval_dataset is not None:
            metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        if self.sts_evaluator is not None:
            encoder = self.accelerator.unwrap_model(self.model)
            sts = {f"{metric_key_prefix}_{k}": v for k, v in self.sts_evaluator(encoder).items()}
            metrics.update(sts)
            self.log(sts)
            base = _base_encoder(self.model)
            if hasattr(base, "card_info"):
                name = self.sts_evaluator.name
                base.card_info.add_result(
                    EvalEntry(
                        task_type="sentence-similarity",
                        dataset_name=self.sts_evaluator.dataset_name,
                        dataset_type=self.sts_evaluator.dataset_type,
                        dataset_split=self.sts_evaluator.split,
                        metric_type=f"spearman_{self.sts_evaluator.main_similarity}",
                        metric_name=f"Spearman ({self.sts_evaluator.main_similarity})",
                        metric_value=float(sts[f"{metric_key_prefix}_{name}_spearman"]),
                    )
                )
        if self.evaluators:
            encoder = self.accelerator.unwrap_model(self.model)
            figures: dict[str, float] = {}
            for ev in self.evaluators:
                was_training = encoder.training
                try:
                    figures.update({f"{metric_key_prefix}_{k}": float(v) for k, v in ev(encoder).items()})
                finally:
                    encoder.train(was_training)
            metrics.update(figures)
            self.log(figures)
        if self.sts_evaluator is not None or self.evaluators:
            # One on_evaluate for this evaluation's own figures (early stopping, best-model tracking).
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        elif eval_dataset is None and self.eval_dataset is None:
            raise ValueError(
                "Nothing to evaluate: pass eval_dataset=, sts_evaluator= or evaluators= to the trainer."
            )
        return metrics

    # -- saving ---------------------------------------------------------------------------------
    def _fill_card(self) -> None:
        base = _base_encoder(self.model)
        info = getattr(base, "card_info", None)
        if info is None:
            return
        cfg = getattr(self.loss_fn, "config_dict", lambda: {})()
        info.training = {
            "loss": f"`{type(self.loss_fn).__name__}` ({', '.join(f'{k}={v}' for k, v in cfg.items())})",
            "data layout": self.roles.describe(),
            "training examples": len(self.train_dataset),
            "batch size (all processes)": self.args.per_device_train_batch_size
            * max(self.args.world_size, 1),
            "learning rate": self.args.learning_rate,
            "epochs": self.args.num_train_epochs,
            "steps": self.state.global_step,
            "no duplicate texts per batch": self.args.no_duplicates,
        }
        peft_cfg = getattr(self.model, "peft_config", None)
        if peft_cfg:
            c = next(iter(peft_cfg.values()))
            info.training["LoRA"] = (
                f"r={getattr(c, 'r', '?')}, alpha={getattr(c, 'lora_alpha', '?')}, "
                f"targets={sorted(getattr(c, 'target_modules', []) or [])}"
            )
            info.tags = list(dict.fromkeys([*info.tags, "lora", "peft"]))
        citation = getattr(self.loss_fn, "citation", "")
        if citation and citation not in info.citations:
            info.citations.append(citation.strip())
        if self.args.dataset_name and self.args.dataset_name not in info.datasets:
            info.datasets.append(self.args.dataset_name)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        self._fill_card()
        super()._save(output_dir, state_dict)

    def save_encoder(self, output_dir: str, merge_lora: bool = True) -> Any:
        """Save a standalone, Hub-ready encoder (LoRA merged into a copy) with its card; return it."""
        self._fill_card()
        encoder = self.accelerator.unwrap_model(self.model)
        if merge_lora and hasattr(encoder, "merge_and_unload"):
            encoder = copy.deepcopy(encoder).merge_and_unload()
        encoder.save_pretrained(output_dir)
        return encoder

    def push_to_hub(self, repo_id: str | None = None, merge_lora: bool = True, **kwargs: Any) -> Any:
        """Push the trained encoder (LoRA merged) with its card; the Trainer's generic card is not used."""
        repo_id = repo_id or self.args.hub_model_id or os.path.basename(os.path.abspath(self.args.output_dir))
        self._fill_card()
        encoder = self.accelerator.unwrap_model(self.model)
        if merge_lora and hasattr(encoder, "merge_and_unload"):
            encoder = copy.deepcopy(encoder).merge_and_unload()
        kwargs.pop("blocking", None)
        kwargs.setdefault("token", self.args.hub_token)
        kwargs.setdefault("private", self.args.hub_private_repo)
        return encoder.push_to_hub(repo_id, **kwargs)


def features_rows(features: dict[str, torch.Tensor]) -> int:
    """Number of rows of a padded token batch."""
    ref = features.get("input_ids")
    if ref is None:
        ref = features.get("inputs_embeds")
    if ref is None:
        ref = next(v for v in features.values() if isinstance(v, torch.Tensor))
    return int(ref.shape[0])


def _inner_loss(loss: nn.Module) -> nn.Module:
    """The loss that a GradCache wrapper wraps (the loss itself otherwise)."""
    return loss.loss if isinstance(loss, GradCache) else loss


class _ZeroLossGrad(TrainerCallback):
    """Zero the gradients of the loss module's parameters after every optimiser step."""

    def __init__(self, loss: nn.Module) -> None:
        self.loss = loss

    def on_step_end(self, args, state, control, **kwargs):
        self.loss.zero_grad(set_to_none=True)


class TemplateCollator:
    """Wrap a collator and put every text of the given columns into the encoder's `prompt_template` first.

    Args:
        collator (`Callable`): the collator to wrap.
        template (`str`): a template with one `{text}` (see `SentenceEncoderConfig.prompt_template`).
        columns (`Sequence[str]`): the text columns to wrap; other columns and non-string values are kept.
        tokenizer (`Any`, *optional*): the model's tokenizer, to cut texts to `max_text_tokens` first.
        max_text_tokens (`int`, *optional*): tokens kept of each text (`None`: texts are not cut).
    """

    def __init__(
        self,
        collator: Any,
        template: str,
        columns: Any,
        tokenizer: Any = None,
        max_text_tokens: int | None = None,
    ) -> None:
        self.collator = collator
        self.template = template
        self.columns = tuple(columns)
        self.tokenizer = tokenizer
        self.max_text_tokens = max_text_tokens

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        wrapped = [dict(row) for row in rows]
        for column in self.columns:
            # one tokenizer call per column and batch, not per text
            where = [i for i, row in enumerate(wrapped) if isinstance(row.get(column), str)]
            if not where:
                continue
            texts = apply_prompt_template(
                self.template, [wrapped[i][column] for i in where], self.tokenizer, self.max_text_tokens
            )
            for i, text in zip(where, texts):
                wrapped[i][column] = text
        return self.collator(wrapped)


def _base_encoder(model: Any) -> Any:
    """The SentenceEncoder under DDP (`.module`) and PEFT (`get_base_model()`) wrappers."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def __getattr__(name: str) -> Any:
    # ``LOSSES`` is computed on access, so losses registered after import (by a wing or user code) show.
    if name == "LOSSES":
        return ("auto", *loss_registry.available_losses())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ContrastiveConfig", "ContrastiveTrainer", "build_loss", "LOSSES"]  # noqa: F822 (LOSSES: module __getattr__)
