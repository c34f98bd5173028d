"""`RerankerTrainer` + `RerankerConfig`: training rerankers through `transformers.Trainer`.

Data: one row per training group, `query` (or `anchor`) + `positive` + ``negative_1 ..
negative_n`` columns, exactly what `mine_hard_negatives(..., output_format="n-tuple")` writes;
or, for the pointwise objective only, labelled pairs (`query`/`anchor`, `positive`/
`document`, `label`) as its `labeled-pair` format writes. Each batch of `B` groups becomes
`B x (1 + n)` (query, document) pairs, tokenised by the model's `tokenize_pairs`.

Objectives (`RerankerConfig.objective`):

=============  ===========================================  =====================================
objective      cross-encoder                                LLM yes/no reranker
=============  ===========================================  =====================================
`pointwise`  BCE on the logit, 1 relevant / 0 not         SFT: cross-entropy of softmax({no, yes})
`listwise`   InfoNCE over the group's logits              CL: InfoNCE over the group's "yes" logits
=============  ===========================================  =====================================

The LLM pair follows "SFT vs contrastive learning for LLM reranking" (2025); the aliases
`sft` / `bce` mean `pointwise` and `cl` / `infonce` mean `listwise`.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import Trainer, TrainingArguments

from hf_contrastive.core.boundary import corrupt_file_errors
from hf_contrastive.core.checkpoint import AtomicCheckpointMixin
from hf_contrastive.core.data.checks import require_rows
from hf_contrastive.core.engines import EngineMixin
from hf_contrastive.core.losses.base import ContrastiveLoss
from hf_contrastive.core.peft import apply_peft
from hf_contrastive.retrieval.rerankers.losses import ListwiseInfoNCELoss, PointwiseBCELoss, YesNoSFTLoss
from hf_contrastive.retrieval.rerankers.modeling import CrossEncoderReranker, LLMYesNoReranker

OBJECTIVES = ("pointwise", "listwise")
_ALIASES = {"sft": "pointwise", "bce": "pointwise", "cl": "listwise", "infonce": "listwise"}
QUERY_NAMES = ("query", "anchor", "question")
DOCUMENT_NAMES = ("positive", "document", "passage")


@dataclass
class RerankerConfig(TrainingArguments):
    r"""Training arguments of [`RerankerTrainer`].

    Args:
        objective (`str`, defaults to `"pointwise"`): `pointwise` (cross-encoder BCE / LLM SFT) or
            `listwise` (InfoNCE over 1 positive + n negatives; LLM CL). Aliases: `sft`, `bce`, `cl`,
            `infonce`.
        temperature (`float`, defaults to 1.0): InfoNCE temperature on the scores (logits are
            unbounded, so 1.0 is the natural choice; the CL paper uses the raw "yes" logit).
        balance_positives (`bool`, defaults to `False`): pointwise cross-encoder only: weight the
            positive term by the number of negatives per group.
        max_seq_length (`int`, *optional*): overrides the model's `config.max_seq_length` (pair length).
        query_column / positive_column / negative_columns / label_column: explicit column names;
            detected by default (`query`/`anchor`, `positive`/`document`, `negative*`, `label`).
    """

    objective: str = field(default="pointwise", metadata={"help": f"One of {OBJECTIVES} (or sft/cl)."})
    temperature: float = field(default=1.0, metadata={"help": "InfoNCE temperature on the scores."})
    balance_positives: bool = field(
        default=False, metadata={"help": "Weight positives by n negatives (BCE)."}
    )
    max_seq_length: int | None = field(default=None, metadata={"help": "Pair truncation length."})
    query_column: str | None = field(default=None, metadata={"help": "Query column."})
    positive_column: str | None = field(default=None, metadata={"help": "Relevant-document column."})
    negative_columns: list[str] | None = field(
        default=None, metadata={"help": "Irrelevant-document columns."}
    )
    label_column: str | None = field(default=None, metadata={"help": "0/1 label column (labelled pairs)."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the text columns."})
    learning_rate: float = field(default=2e-5, metadata={"help": "Learning rate."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Query groups per batch."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs."})

    def __post_init__(self) -> None:
        self.objective = _ALIASES.get(self.objective, self.objective)
        if self.objective not in OBJECTIVES:
            raise ValueError(
                f"objective must be one of {OBJECTIVES} (or sft/cl/bce/infonce), got {self.objective!r}."
            )
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}.")
        if isinstance(self.negative_columns, str):
            self.negative_columns = [c.strip() for c in self.negative_columns.split(",") if c.strip()]
        super().__post_init__()


@dataclass
class RerankerColumns:
    query: str
    positive: str
    negatives: list[str]
    label: str | None = None

    @property
    def grouped(self) -> bool:
        return self.label is None


def resolve_reranker_columns(columns: list[str], args: RerankerConfig) -> RerankerColumns:
    """Column roles of a reranker training set (explicit names win over detection)."""

    def pick(explicit: str | None, names: tuple[str, ...], role: str) -> str:
        if explicit is not None:
            if explicit not in columns:
                raise ValueError(f"{role} column {explicit!r} not in the dataset columns {columns}.")
            return explicit
        for n in names:
            if n in columns:
                return n
        raise ValueError(
            f"No {role} column: expected one of {names} (or pass {role}_column=), got {columns}."
        )

    query = pick(args.query_column, QUERY_NAMES, "query")
    positive = pick(args.positive_column, DOCUMENT_NAMES, "positive")
    label = args.label_column or ("label" if "label" in columns else None)
    if label is not None and label not in columns:
        raise ValueError(f"label column {label!r} not in the dataset columns {columns}.")
    if args.negative_columns is not None:
        negatives = list(args.negative_columns)
        missing = [c for c in negatives if c not in columns]
        if missing:
            raise ValueError(f"negative column(s) {missing} not in the dataset columns {columns}.")
    else:
        negatives = sorted(
            (c for c in columns if c.startswith("negative")),
            key=lambda c: (len(c), c),
        )
    if label is not None and negatives:
        raise ValueError(
            f"Give either labelled pairs ({label!r}) or negative columns ({negatives}), not both."
        )
    if label is None and not negatives:
        raise ValueError(
            f"No negatives: the dataset needs negative_1..n columns (mine_hard_negatives output_format='n-tuple') "
            f"or a 0/1 label column; got {columns}."
        )
    if label is not None and args.objective == "listwise":
        raise ValueError(
            "objective='listwise' needs groups (negative columns); labelled pairs only train pointwise."
        )
    return RerankerColumns(query, positive, negatives, label)


class RerankerCollator:
    """Rows -> tokenised (query, document) pairs + `labels` + `group_size`."""

    def __init__(self, model: Any, columns: RerankerColumns) -> None:
        self.model = model
        self.columns = columns

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        c = self.columns
        if c.grouped:
            docs_per_row = [[r[c.positive], *(r[n] for n in c.negatives)] for r in rows]
            group = len(docs_per_row[0])
            queries = [r[c.query] for r in rows for _ in range(group)]
            docs = [d for ds in docs_per_row for d in ds]
            labels = torch.tensor(([1.0] + [0.0] * (group - 1)) * len(rows))
        else:
            group = 1
            queries = [r[c.query] for r in rows]
            docs = [r[c.positive] for r in rows]
            labels = torch.tensor([float(r[c.label]) for r in rows])
        feats = self.model.tokenize_pairs(queries, docs)
        feats["labels"] = labels
        feats["group_size"] = torch.tensor(group)
        return feats


def build_reranker_loss(args: RerankerConfig, llm: bool) -> ContrastiveLoss:
    """The loss of `args.objective` for a cross-encoder (`llm=False`) or an LLM yes/no reranker.

    Args:
        args (`RerankerConfig`): the training arguments (`objective`, `temperature`).
        llm (`bool`): whether the model is an [`LLMYesNoReranker`].

    Returns:
        `pointwise`: [`YesNoSFTLoss`] (LLM) or [`PointwiseBCELoss`] (cross-encoder; the trainer passes the
        positive weight per batch when `balance_positives` is on); `listwise`: [`ListwiseInfoNCELoss`].
    """
    if args.objective == "pointwise":
        return YesNoSFTLoss() if llm else PointwiseBCELoss()
    return ListwiseInfoNCELoss(temperature=args.temperature)


def _base_reranker(model: Any) -> Any:
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def load_reranker(path: str | os.PathLike) -> CrossEncoderReranker | LLMYesNoReranker:
    """Load a saved reranker folder as the right class."""

    cfg = os.path.join(path, "config.json")
    if not os.path.isfile(cfg):
        raise ValueError(f"{path} has no config.json: not a saved reranker folder.")
    with corrupt_file_errors(cfg), open(cfg, encoding="utf-8") as f:
        model_type = json.load(f).get("model_type")
    for cls in (CrossEncoderReranker, LLMYesNoReranker):
        if cls.config_class.model_type == model_type:
            return cls.from_pretrained(path)
    raise ValueError(f"{path} holds a {model_type!r} model, not a reranker of this library.")


class RerankerTrainer(AtomicCheckpointMixin, EngineMixin, Trainer):
    r"""`Trainer` for [`CrossEncoderReranker`] and [`LLMYesNoReranker`].

    Args:
        model (`Any`, *optional*): a reranker, or the path of a saved one.
        args (`RerankerConfig | None`, *optional*): [`RerankerConfig`].
        train_dataset (`Any`, *optional*): groups (query, positive, negative_1..n) or labelled pairs (see the module doc).
        peft_config (`Any`, *optional*): a `peft` config (`LoraConfig`); the model is wrapped with `apply_peft` (target modules checked). For
            the cross-encoder add `modules_to_save=["head"]` so the new head trains.

    The objective is `self.loss_fn` (see [`build_reranker_loss`]), a loss module that returns a `LossOutput`.
    """

    def __init__(
        self,
        model: Any = None,
        args: RerankerConfig | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        peft_config: Any = None,
        callbacks: list | None = None,
        optimizers: tuple = (None, None),
        **kwargs: Any,
    ) -> None:
        if args is None:
            args = RerankerConfig(output_dir="hf-contrastive-output")
        if not isinstance(args, RerankerConfig):
            raise TypeError(f"args must be a RerankerConfig, got {type(args).__name__}.")
        if isinstance(model, (str, os.PathLike)):
            model = load_reranker(model)
        if not isinstance(_base_reranker(model), (CrossEncoderReranker, LLMYesNoReranker)):
            raise TypeError(
                f"model must be a CrossEncoderReranker or an LLMYesNoReranker, got {type(model).__name__}."
            )
        base = _base_reranker(model)
        if processing_class is not None:
            base.tokenizer = processing_class
        if base.tokenizer is None:
            raise ValueError("The reranker has no tokenizer: pass processing_class= or set model.tokenizer.")
        if args.max_seq_length is not None:
            base.config.max_seq_length = int(args.max_seq_length)
        if train_dataset is None or not hasattr(train_dataset, "column_names"):
            raise TypeError(f"train_dataset must be a datasets.Dataset, got {type(train_dataset).__name__}.")
        require_rows(train_dataset, name="train_dataset", owner=type(self).__name__)
        require_rows(eval_dataset, name="eval_dataset", owner=type(self).__name__)
        self.columns = resolve_reranker_columns(train_dataset.column_names, args)
        self.loss_fn = build_reranker_loss(args, llm=isinstance(base, LLMYesNoReranker))
        if peft_config is not None:
            model = apply_peft(model, peft_config)
        collator = kwargs.pop("data_collator", None) or RerankerCollator(base, self.columns)
        super().__init__(
            model=model,
            args=args,
            data_collator=collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=base.tokenizer,
            callbacks=callbacks,
            optimizers=optimizers,
            **kwargs,
        )
        # compute_loss returns the batch mean and ignores num_items_in_batch; a model forward that takes **kwargs
        # would make the Trainer skip its division by the gradient-accumulation steps.
        self.model_accepts_loss_kwargs = False

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        group = int(inputs.pop("group_size"))
        out = model(**inputs)
        if isinstance(self.loss_fn, YesNoSFTLoss):
            terms = self.loss_fn(out.yes_no_logits, labels)
        elif isinstance(self.loss_fn, PointwiseBCELoss):
            pos_weight = float(group - 1) if self.args.balance_positives and group > 1 else None
            terms = self.loss_fn(out.logits, labels, pos_weight=pos_weight)
        else:
            is_llm = isinstance(_base_reranker(model), LLMYesNoReranker)
            scores = out.yes_no_logits[:, 1] if is_llm else out.logits
            terms = self.loss_fn(scores.view(-1, group))
        loss = terms.loss
        return (loss, out) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        with torch.no_grad():
            loss = self.compute_loss(model, self._prepare_inputs(inputs))
        return loss.detach(), None, None

    def save_reranker(self, output_dir: str, merge_lora: bool = True) -> Any:
        """Save a standalone reranker (LoRA merged into a copy) with its tokenizer; return it."""
        model = self.accelerator.unwrap_model(self.model)
        if merge_lora and hasattr(model, "merge_and_unload"):
            model = copy.deepcopy(model).merge_and_unload()
        model.save_pretrained(output_dir)
        return model


__all__ = [
    "OBJECTIVES",
    "RerankerCollator",
    "RerankerConfig",
    "RerankerTrainer",
    "build_reranker_loss",
    "load_reranker",
    "resolve_reranker_columns",
]
