"""`DSETrainer`: distilling a cross-encoder teacher into a [`DistilledPairScorer`] through `transformers.Trainer`.

Data: rows of two sentences and a label (`sentence1`, `sentence2`, `label` or `score`; other names through the
training arguments) and the teacher's logits for the pair. The logits come from a column (`teacher_logits`)
or are computed once by the teacher given to the trainer and kept in a cache file
([`cached_teacher_logits`]): the teacher never runs during training.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from datasets import ClassLabel
from scipy.stats import pearsonr, spearmanr
from transformers import Trainer, TrainingArguments

from hf_contrastive.core.checkpoint import AtomicCheckpointMixin
from hf_contrastive.core.data.checks import require_rows
from hf_contrastive.core.engines import EngineMixin
from hf_contrastive.embeddings.dse.cache import cached_teacher_logits
from hf_contrastive.embeddings.dse.losses import DSELoss
from hf_contrastive.embeddings.dse.modeling import DistilledPairScorer

logger = logging.getLogger(__name__)

LABEL_NAMES = ("label", "score", "labels")
_TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class DSETrainingArguments(TrainingArguments):
    r"""Training arguments of [`DSETrainer`]: `TrainingArguments` plus the DSE objective and the data columns.

    Args:
        distill_weight (`float`, *optional*, defaults to 0.5):
            `a` in `(1 - a) * task_loss + a * sum (student - teacher)^2` (the paper's 0.5).
        max_seq_length (`int`, *optional*):
            Truncation length of each sentence; defaults to the model's `config.max_seq_length`.
        sentence1_column (`str`, *optional*, defaults to `"sentence1"`):
            Column of the first sentences (the `u` side).
        sentence2_column (`str`, *optional*, defaults to `"sentence2"`):
            Column of the second sentences (the `v` side).
        label_column (`str`, *optional*):
            Column of the gold scores or class ids; detected among `label`, `score`, `labels` by default.
        teacher_column (`str`, *optional*, defaults to `"teacher_logits"`):
            Column of the teacher's logits; filled by the trainer from `teacher=` and `teacher_cache=` when absent.
        teacher_max_length (`int`, *optional*):
            Pair truncation length of the teacher when the trainer computes its logits (see
            `resolve_teacher_max_length`).
        teacher_batch_size (`int`, *optional*, defaults to `32`):
            Pairs per teacher forward when the trainer computes its logits.
        dataset_name (`str`, *optional*):
            Hub id of the training data, for the model card.
    """

    distill_weight: float = field(default=0.5, metadata={"help": "Weight a of the distillation term."})
    max_seq_length: int | None = field(default=None, metadata={"help": "Truncation length of each sentence."})
    sentence1_column: str = field(default="sentence1", metadata={"help": "First-sentence column."})
    sentence2_column: str = field(default="sentence2", metadata={"help": "Second-sentence column."})
    label_column: str | None = field(default=None, metadata={"help": "Gold score / class column."})
    teacher_column: str = field(default="teacher_logits", metadata={"help": "Teacher-logits column."})
    teacher_max_length: int | None = field(default=None, metadata={"help": "Teacher pair truncation length."})
    teacher_batch_size: int = field(default=32, metadata={"help": "Pairs per teacher forward."})
    dataset_name: str | None = field(default=None, metadata={"help": "Hub id of the data, for the card."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the text columns."})
    learning_rate: float = field(default=2e-5, metadata={"help": "Learning rate."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Pairs per batch."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs."})

    def __post_init__(self) -> None:
        if isinstance(self.distill_weight, bool) or not 0.0 <= float(self.distill_weight) <= 1.0:
            raise ValueError(f"distill_weight must be a number in [0, 1], got {self.distill_weight!r}.")
        if self.max_seq_length is not None and int(self.max_seq_length) < 1:
            raise ValueError(f"max_seq_length must be >= 1, got {self.max_seq_length!r}.")
        if int(self.teacher_batch_size) < 1:
            raise ValueError(f"teacher_batch_size must be >= 1, got {self.teacher_batch_size!r}.")
        super().__post_init__()


def resolve_label_column(columns: Sequence[str], explicit: str | None) -> str:
    """The label column: `explicit` when given (and present), else the first of `label`, `score`, `labels`."""
    if explicit is not None:
        if explicit not in columns:
            raise ValueError(f"label column {explicit!r} not in the dataset columns {list(columns)}.")
        return explicit
    for name in LABEL_NAMES:
        if name in columns:
            return name
    raise ValueError(
        f"No label column: expected one of {LABEL_NAMES} (or pass label_column=), got {list(columns)}."
    )


def check_labels(dataset: Any, label_column: str, task: str, num_labels: int) -> None:
    """Refuse labels that do not fit the task: class ids as regression scores, scores as class ids."""
    feature = dataset.features.get(label_column) if getattr(dataset, "features", None) is not None else None
    values = np.asarray(dataset[label_column], dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"{label_column!r} must hold one number per pair, got shape {values.shape}.")
    if not np.isfinite(values).all():
        raise ValueError(
            f"{label_column!r} holds {int((~np.isfinite(values)).sum())} NaN or infinite labels."
        )
    if task == "regression":
        if isinstance(feature, ClassLabel):
            raise ValueError(
                f"{label_column!r} holds class labels ({feature.names}); a regression scorer needs scores. Build "
                "the scorer with task='classification' for class labels."
            )
        return
    bad = (values != np.round(values)) | (values < 0) | (values >= num_labels)
    if bad.any():
        first = values[bad][0]
        raise ValueError(
            f"task='classification' with {num_labels} labels needs class ids 0..{num_labels - 1} in "
            f"{label_column!r}; {int(bad.sum())} rows are not (first: {first!r})."
        )


class DSECollator:
    """Rows -> each side tokenised on its own (`input_ids_a`, ..., `input_ids_b`, ...), `labels` and
    `teacher_logits`."""

    def __init__(
        self,
        tokenizer: Any,
        columns: tuple[str, str, str],
        teacher_column: str | None,
        max_length: int,
        regression: bool,
    ) -> None:
        self.tokenizer = tokenizer
        self.columns = columns
        self.teacher_column = teacher_column
        self.max_length = max_length
        self.regression = regression

    def _side(self, texts: list[str], suffix: str) -> dict[str, torch.Tensor]:
        feats = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {f"{k}_{suffix}": feats[k] for k in _TOKEN_KEYS if k in feats}

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        s1, s2, label = self.columns
        batch = {**self._side([r[s1] for r in rows], "a"), **self._side([r[s2] for r in rows], "b")}
        batch["labels"] = torch.tensor(
            [r[label] for r in rows], dtype=torch.float32 if self.regression else torch.long
        )
        if self.teacher_column is not None:
            batch["teacher_logits"] = torch.tensor(
                [r[self.teacher_column] for r in rows], dtype=torch.float32
            )
        return batch


def evaluate_pair_scores(predictions: Any, gold: Any, task: str = "regression") -> dict[str, float]:
    """Figures of pair scores against gold labels.

    Args:
        predictions (`Any`): `[N]` scores (regression) or `[N, C]` logits (classification).
        gold (`Any`): `[N]` gold scores or class ids.
        task (`str`, *optional*, defaults to `"regression"`): `"regression"` or `"classification"`.

    Returns:
        `dict`: `spearman` and `pearson` (regression; NaN with a warning when the predictions are constant) or
        `accuracy` and `f1` (classification; F1 of class 1 for two classes, macro F1 otherwise).
    """
    pred = np.asarray(torch.as_tensor(predictions).double().cpu().numpy())
    gold = np.asarray(gold, dtype=np.float64)
    if pred.shape[0] != gold.shape[0]:
        raise ValueError(f"Got {pred.shape[0]} predictions for {gold.shape[0]} gold labels.")
    if not np.isfinite(pred).all():
        raise ValueError(f"{int((~np.isfinite(pred)).sum())} predictions are NaN or infinite.")
    if task == "regression":
        if pred.ndim != 1:
            raise ValueError(f"Regression predictions must have shape [N], got {pred.shape}.")
        if np.std(pred) == 0 or np.std(gold) == 0:
            logger.warning("Correlation undefined (constant predictions or gold scores); reported as NaN.")
            return {"spearman": float("nan"), "pearson": float("nan")}
        return {"spearman": float(spearmanr(pred, gold)[0]), "pearson": float(pearsonr(pred, gold)[0])}
    if task != "classification":
        raise ValueError(f"task must be 'regression' or 'classification', got {task!r}.")
    if pred.ndim != 2:
        raise ValueError(f"Classification predictions must be logits of shape [N, C], got {pred.shape}.")
    guess, gold = pred.argmax(-1), gold.astype(np.int64)
    classes = [1] if pred.shape[1] == 2 else list(range(pred.shape[1]))
    f1s = []
    for c in classes:
        tp = float(((guess == c) & (gold == c)).sum())
        denom = float((guess == c).sum() + (gold == c).sum())
        f1s.append(2 * tp / denom if denom else 0.0)
    return {"accuracy": float((guess == gold).mean()), "f1": float(np.mean(f1s))}


def _base_model(model: Any) -> Any:
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class DSETrainer(AtomicCheckpointMixin, EngineMixin, Trainer):
    r"""`Trainer` for Distilled Sentence Embedding: a [`DistilledPairScorer`] learns the gold labels and the
    cross-encoder teacher's logits, `(1 - a) * task_loss + a * sum (student - teacher)^2` ([`DSELoss`]).

    Args:
        model (`DistilledPairScorer` or `str`, *optional*): the student, or the folder of a saved one.
        args ([`DSETrainingArguments`], *optional*): the training arguments.
        train_dataset (`datasets.Dataset`, *optional*): labelled pairs, with a teacher-logits column or not.
        eval_dataset (`datasets.Dataset`, *optional*): labelled pairs; `evaluate` scores them with the student
            (`eval_spearman` / `eval_pearson`, or `eval_accuracy` / `eval_f1`).
        teacher (`Any`, *optional*): the teacher (a `CrossEncoderReranker`, an
            `AutoModelForSequenceClassification` or a callable), when `train_dataset` has no teacher-logits
            column; its logits are computed once through `teacher_cache`.
        teacher_cache (`str | os.PathLike`, *optional*): the cache file of the teacher's logits (required with
            `teacher`); a cache made for another teacher or other data is refused.
        teacher_tokenizer (`Any`, *optional*): the tokenizer of a sequence-classification teacher.
        teacher_id (`str`, *optional*): the name of a callable teacher (its cache key).
        processing_class (`Any`, *optional*): the student's tokenizer; defaults to the model's.
        callbacks (`list`, *optional*): `TrainerCallback`s.
        optimizers (`tuple`, *optional*, defaults to `(None, None)`): optimizer and scheduler.
        kwargs (`Any`, *optional*): the rest goes to `Trainer`.
    """

    def __init__(
        self,
        model: Any = None,
        args: DSETrainingArguments | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        teacher: Any = None,
        teacher_cache: str | os.PathLike | None = None,
        teacher_tokenizer: Any = None,
        teacher_id: str | None = None,
        processing_class: Any = None,
        callbacks: list | None = None,
        optimizers: tuple = (None, None),
        **kwargs: Any,
    ) -> None:
        if args is None:
            args = DSETrainingArguments(output_dir="hf-contrastive-output")
        if not isinstance(args, DSETrainingArguments):
            raise TypeError(f"args must be a DSETrainingArguments, got {type(args).__name__}.")
        if isinstance(model, (str, os.PathLike)):
            model = DistilledPairScorer.from_pretrained(model)
        base = _base_model(model)
        if not isinstance(base, DistilledPairScorer):
            raise TypeError(f"model must be a DistilledPairScorer, got {type(model).__name__}.")
        tokenizer = processing_class if processing_class is not None else base.tokenizer
        if tokenizer is None:
            raise ValueError("The student has no tokenizer: pass processing_class= or set model.tokenizer.")
        base.tokenizer = tokenizer
        if train_dataset is None or not hasattr(train_dataset, "column_names"):
            raise TypeError(f"train_dataset must be a datasets.Dataset, got {type(train_dataset).__name__}.")
        require_rows(train_dataset, name="train_dataset", owner=type(self).__name__)
        require_rows(eval_dataset, name="eval_dataset", owner=type(self).__name__)
        config = base.config
        self.task = config.task
        self.label_column = resolve_label_column(train_dataset.column_names, args.label_column)
        for role, column in (("sentence1", args.sentence1_column), ("sentence2", args.sentence2_column)):
            if column not in train_dataset.column_names:
                raise ValueError(
                    f"{role} column {column!r} not in the dataset columns {train_dataset.column_names} "
                    f"(set {role}_column=)."
                )
        check_labels(train_dataset, self.label_column, self.task, config.num_labels)
        if eval_dataset is not None:
            check_labels(
                eval_dataset,
                resolve_label_column(eval_dataset.column_names, args.label_column),
                self.task,
                config.num_labels,
            )
        self.teacher_info: dict[str, Any] = {}
        train_dataset = self._with_teacher_logits(
            train_dataset, args, teacher, teacher_cache, teacher_tokenizer, teacher_id
        )
        self._check_teacher_width(train_dataset[args.teacher_column][0], config)
        self.loss_fn = DSELoss(distill_weight=args.distill_weight, task=self.task)
        max_length = base._max_length(args.max_seq_length, tokenizer)
        collator = kwargs.pop("data_collator", None) or DSECollator(
            tokenizer,
            (args.sentence1_column, args.sentence2_column, self.label_column),
            args.teacher_column,
            max_length,
            self.task == "regression",
        )
        self._components: dict[str, list[float]] = defaultdict(list)
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

    # -- teacher logits --------------------------------------------------------------------------------
    def _with_teacher_logits(
        self,
        dataset: Any,
        args: DSETrainingArguments,
        teacher: Any,
        cache: str | os.PathLike | None,
        tokenizer: Any,
        teacher_id: str | None,
    ) -> Any:
        column = args.teacher_column
        if column in dataset.column_names:
            if teacher is not None:
                raise ValueError(
                    f"train_dataset already has the teacher-logits column {column!r}; pass either that column or "
                    "teacher=, not both."
                )
            self.teacher_info = {"source": f"column {column!r}"}
            return dataset
        if teacher is None:
            raise ValueError(
                f"DSETrainer needs the teacher's logits: a {column!r} column in train_dataset, or teacher= with "
                "teacher_cache= (the file where its logits are computed once)."
            )
        if cache is None:
            raise ValueError(
                "teacher= needs teacher_cache= (a file path): DSE computes the teacher's logits once and keeps "
                "them on disk, keyed by the teacher and the data."
            )
        a, b = list(dataset[args.sentence1_column]), list(dataset[args.sentence2_column])
        logits, key = cached_teacher_logits(
            teacher,
            a,
            b,
            cache,
            tokenizer,
            args.teacher_max_length,
            args.teacher_batch_size,
            teacher_id,
            return_key=True,
        )
        self.teacher_info = {
            "source": key.teacher_name,
            "fingerprint": key.teacher[:16],
            "max_length": key.max_length,
            "cache": os.fspath(cache),
        }
        return dataset.add_column(column, logits.tolist())

    def _check_teacher_width(self, first: Any, config: Any) -> None:
        value = np.asarray(first, dtype=np.float64)
        if self.task == "regression" and value.ndim != 0:
            raise ValueError(
                f"A regression student needs one teacher logit per pair; the teacher gives {value.size}. Use a "
                "teacher with one output (a regression cross-encoder) or task='classification'."
            )
        if self.task == "classification" and (value.ndim != 1 or value.size != config.num_labels):
            raise ValueError(
                f"A classification student with {config.num_labels} labels needs {config.num_labels} teacher logits "
                f"per pair; the teacher gives shape {value.shape}."
            )

    # -- training --------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        teacher = inputs.pop("teacher_logits")
        out = model(**inputs)
        terms = self.loss_fn(out.logits, teacher, labels)
        if model.training:
            for k, v in terms.components.items():
                self._components[k].append(float(v))
        return (terms.loss, out) if return_outputs else terms.loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._components:
            for k, values in self._components.items():
                logs[k] = round(sum(values) / len(values), 6)
            self._components.clear()
        super().log(logs, start_time)

    # -- evaluation ------------------------------------------------------------------------------------
    def evaluate(
        self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        """Score the labelled pairs of `eval_dataset` (or the trainer's) with the student.

        Returns `{prefix}_spearman` / `{prefix}_pearson` (regression) or `{prefix}_accuracy` / `{prefix}_f1`
        (classification); the teacher is not needed.
        """
        data = eval_dataset if eval_dataset is not None else self.eval_dataset
        if data is None:
            raise ValueError(
                "Nothing to evaluate: pass eval_dataset= (labelled pairs) to the trainer or here."
            )
        require_rows(data, name="eval_dataset", owner=type(self).__name__)
        label = resolve_label_column(data.column_names, self.args.label_column)
        model = _base_model(self.accelerator.unwrap_model(self.model))
        scores = model.score_pairs(
            list(data[self.args.sentence1_column]),
            list(data[self.args.sentence2_column]),
            batch_size=self.args.per_device_eval_batch_size,
            show_progress_bar=False,
        )
        metrics = {
            f"{metric_key_prefix}_{k}": v
            for k, v in evaluate_pair_scores(scores, data[label], self.task).items()
        }
        self.log(dict(metrics))  # Trainer.log adds the epoch to the dict it is given
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        with torch.no_grad():
            inputs = self._prepare_inputs(inputs)
            if "teacher_logits" in inputs:
                loss, out = self.compute_loss(model, inputs, return_outputs=True)
                return loss.detach(), out.logits.detach(), inputs["labels"]
            labels = inputs.pop("labels", None)
            out = model(**inputs)
        return None, out.logits.detach(), labels

    # -- saving ----------------------------------------------------------------------------------------
    def _fill_card(self) -> None:
        base = _base_model(self.model)
        info = base.card_info
        training = {
            "objective": (
                f"DSE: (1 - a) x {'MSE to the gold scores' if self.task == 'regression' else 'cross-entropy'} "
                f"+ a x squared distance to the teacher's logits, a = {self.loss_fn.distill_weight}"
            ),
            "teacher": ", ".join(f"{k} {v}" for k, v in self.teacher_info.items()) or "unknown",
            "training pairs": len(self.train_dataset),
            "steps": self.state.global_step,
        }
        info.training = {**info.training, **training}
        if self.args.dataset_name and self.args.dataset_name not in info.datasets:
            info.datasets.append(self.args.dataset_name)
        info.training.update(
            {
                "learning rate": self.args.learning_rate,
                "epochs": self.args.num_train_epochs,
                "batch size (all processes)": self.args.per_device_train_batch_size
                * max(self.args.world_size, 1),
            }
        )

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        self._fill_card()
        super()._save(output_dir, state_dict)

    def save_scorer(self, output_dir: str | os.PathLike) -> DistilledPairScorer:
        """Save the student (weights, config, tokenizer and its model card) to `output_dir`; return it."""
        self._fill_card()
        model = _base_model(self.accelerator.unwrap_model(self.model))
        model.save_pretrained(output_dir)
        return model


__all__ = [
    "DSECollator",
    "DSETrainer",
    "DSETrainingArguments",
    "LABEL_NAMES",
    "check_labels",
    "evaluate_pair_scores",
    "resolve_label_column",
]
