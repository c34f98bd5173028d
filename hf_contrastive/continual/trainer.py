"""Class-incremental training (COCONUT, Cappellazzo et al. 2024): [`ContinualTrainer`] and [`ContinualConfig`].

Classes arrive in tasks ([`TaskSchedule`]). The trainer learns the tasks one after another, each as one
`Trainer.train` run of `num_train_epochs` over the task's rows plus the rows of the rehearsal buffer
([`RehearsalBuffer`]), then evaluates on the test rows of every class seen so far (the accuracy matrix) and
adds the task's rows to the buffer. The objective is cross-entropy over the classes seen so far, plus, each with
its weight (0 switches it off):

- `nspt_weight`: [`NSPTLoss`] on the batch's rehearsal rows, the previous task's frozen model as teacher;
- `input_label_weight`: [`InputLabelContrastiveLoss`] between the new rows and the text of the label names,
  encoded by the model's own encoder (or a separate `label_encoder`);
- `distillation_weight`: logit distillation from the previous task's model over the old classes.

`buffer_size=0` and all weights 0 is plain fine-tuning (the lower bound), a buffer alone is experience replay,
and a schedule of one task holding every class is joint training (the upper bound).

Checkpoints (`save_strategy`) go to `output_dir/task-<t>/checkpoint-<N>` and hold, besides the model and the
optimiser, the trainer's own state: the projection heads, the teacher, the buffer (dataset indices and its
random state), the task index and the accuracy matrix; the end of each task is saved whole to
`output_dir/task-<t>/task-end`. `train(resume_from_checkpoint=True)` continues from the furthest of these, so an
interrupted run ends exactly as an uninterrupted one.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset
from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers.utils import logging

from hf_contrastive.continual.buffer import SELECTIONS, RehearsalBuffer
from hf_contrastive.continual.evaluation import continual_metrics
from hf_contrastive.continual.losses import InputLabelContrastiveLoss, NSPTLoss, distillation_loss
from hf_contrastive.continual.schedule import TaskSchedule
from hf_contrastive.core.checkpoint import LIBRARY_STATE_NAME, AtomicCheckpointMixin, last_complete_checkpoint
from hf_contrastive.core.engines import EngineMixin
from hf_contrastive.core.losses.base import upcast
from hf_contrastive.core.utils import atomic_save
from hf_contrastive.embeddings.pooling import mean_pool

logger = logging.get_logger(__name__)

TASK_END = "task-end"
RESULTS_NAME = "continual_results.json"
_STATE_KEY = "continual_state"
_FEATURE_FIELDS = ("entity_states", "sentence_embedding", "embeddings", "pooler_output")


@dataclass
class ContinualConfig(TrainingArguments):
    r"""Arguments of [`ContinualTrainer`]; `num_train_epochs` / `max_steps` apply to each task.

    Args:
        buffer_size (`int`, 0): rows kept for rehearsal (0: no replay).
        buffer_selection (`str`, `"random"`): how a new class's rows are chosen: `"random"` or `"herding"`.
        buffer_class_balanced (`bool`, `True`): equal shares per class (else a reservoir over all rows).
        nspt_weight (`float`, 0.0): weight of the NSPT loss on rehearsal rows (COCONUT: 1.0).
        nspt_temperature (`float`, 0.1): its temperature.
        input_label_weight (`float`, 0.0): weight of the input-label contrast on new rows (COCONUT: 1.0).
        input_label_temperature (`float`, 0.1): its temperature.
        distillation_weight (`float`, 0.0): weight of logit distillation from the previous task's model.
        distillation_temperature (`float`, 2.0): its temperature.
        projection_dim (`int`, 128): output size of the training-only projection heads.
        head_learning_rate (`float`, *optional*): learning rate of those heads (and of a separate label encoder);
            default: `learning_rate`. Fresh heads trained at a fine-tuning rate barely move, so the encoder bends to
            fit random projections; a larger rate lets the heads do their share.
        mask_unseen_classes (`bool`, `True`): cross-entropy and predictions over the classes seen so far only.
        dataset_name (`str`, *optional*): Hub id of the training data, for the model card.
    """

    buffer_size: int = field(default=0, metadata={"help": "Rehearsal buffer rows (0: no replay)."})
    buffer_selection: str = field(default="random", metadata={"help": "random | herding."})
    buffer_class_balanced: bool = field(default=True, metadata={"help": "Equal buffer shares per class."})
    nspt_weight: float = field(default=0.0, metadata={"help": "NSPT loss weight."})
    nspt_temperature: float = field(default=0.1, metadata={"help": "NSPT temperature."})
    input_label_weight: float = field(default=0.0, metadata={"help": "Input-label contrast weight."})
    input_label_temperature: float = field(default=0.1, metadata={"help": "Input-label temperature."})
    distillation_weight: float = field(default=0.0, metadata={"help": "Logit distillation weight."})
    distillation_temperature: float = field(default=2.0, metadata={"help": "Distillation temperature."})
    projection_dim: int = field(default=128, metadata={"help": "Projection head size."})
    head_learning_rate: float | None = field(default=None, metadata={"help": "Learning rate of the heads."})
    mask_unseen_classes: bool = field(
        default=True, metadata={"help": "Only seen classes in CE and predictions."}
    )
    dataset_name: str | None = field(default=None, metadata={"help": "Hub id of the training data."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Rows carry a rehearsal flag."})
    learning_rate: float = field(default=5e-5, metadata={"help": "Learning rate."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Batch size."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Evaluation batch size."})
    report_to: Any = field(default="none", metadata={"help": "Loggers."})
    save_strategy: Any = field(default="no", metadata={"help": "Checkpoints."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.buffer_size, int) or self.buffer_size < 0:
            raise ValueError(f"buffer_size must be an int >= 0, got {self.buffer_size!r}.")
        if self.buffer_selection not in SELECTIONS:
            raise ValueError(f"buffer_selection must be one of {SELECTIONS}, got {self.buffer_selection!r}.")
        if self.head_learning_rate is not None and self.head_learning_rate <= 0:
            raise ValueError(f"head_learning_rate must be > 0, got {self.head_learning_rate}.")
        for name in ("nspt_weight", "input_label_weight", "distillation_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.nspt_weight > 0 and self.buffer_size == 0:
            raise ValueError("nspt_weight > 0 works on rehearsal rows: set buffer_size > 0.")
        if self.remove_unused_columns:
            raise ValueError(
                "ContinualConfig needs remove_unused_columns=False: its rows carry a rehearsal flag that the "
                "model's forward does not take."
            )


def humanize_label(label: str) -> str:
    """A class name as words: `"Cause-Effect(e1,e2)"` -> `"cause effect e1 e2"`, `"book_flight"` -> `"book flight"`.

    Args:
        label (`str`): a class name.
    """
    words = re.sub(r"([a-z])([A-Z])", r"\1 \2", str(label))
    return " ".join(re.sub(r"[^0-9A-Za-z]+", " ", words).lower().split())


def output_features(output: Any, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """The feature vector of each row in a model's output: a pooled field when the model has one
    (`entity_states`, `sentence_embedding`, `embeddings`, `pooler_output`), else the mean of the encoder's
    last hidden states over the attention mask (`encoder_last_hidden_state` for encoder-decoders).

    Args:
        output (`Any`): a `ModelOutput` (the model called with `output_hidden_states=True`).
        attention_mask (`torch.Tensor`, *optional*): `[B, L]` mask of the inputs.

    Returns:
        `torch.Tensor`: `[B, D]` features.
    """
    for name in _FEATURE_FIELDS:
        value = output.get(name) if isinstance(output, Mapping) else getattr(output, name, None)
        if isinstance(value, torch.Tensor) and value.dim() == 2:
            return value
    hidden = output.get("encoder_last_hidden_state")
    if hidden is None:
        states = output.get("hidden_states")
        hidden = states[-1] if states else output.get("last_hidden_state")
    if hidden is None:
        raise ValueError(
            f"{type(output).__name__} has no pooled features ({', '.join(_FEATURE_FIELDS)}) and no hidden "
            "states; the continual losses need a feature vector per row."
        )
    if attention_mask is None:
        return hidden.mean(1)
    return mean_pool(hidden, attention_mask[:, : hidden.shape[1]])


class ContinualHeads(nn.Module):
    """Training-only projections: `nspt` (`Linear -> ReLU -> Linear`, for NSPT), `input` and `label` (linear,
    for the input-label contrast). Absent heads are `None`."""

    def __init__(self, feature_dim: int, label_dim: int, projection_dim: int, nspt: bool, input_label: bool):
        super().__init__()
        self.nspt = (
            nn.Sequential(
                nn.Linear(feature_dim, feature_dim), nn.ReLU(), nn.Linear(feature_dim, projection_dim)
            )
            if nspt
            else None
        )
        self.input = nn.Linear(feature_dim, projection_dim) if input_label else None
        self.label = nn.Linear(label_dim, projection_dim) if input_label else None


class _ZeroExtraGrads(TrainerCallback):
    """Zero the gradients of the parameters outside the model after every optimiser step (`Trainer` zeroes only
    the model's: the heads' would accumulate over steps)."""

    def __init__(self, trainer: ContinualTrainer) -> None:
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        for p in self.trainer._trainable_extras():
            p.grad = None


class _TaskRows(Dataset):
    """The rows of one task: dataset rows by index, each with its rehearsal flag."""

    def __init__(self, base: Any, indices: Sequence[int], rehearsal: Sequence[bool]) -> None:
        self.base, self.indices, self.rehearsal = base, list(indices), list(rehearsal)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"row": self.base[self.indices[i]], "rehearsal": self.rehearsal[i]}


class _FlaggedCollator:
    """Collates the rows with the model's collator and adds the `rehearsal` flags as a bool tensor."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        batch = dict(self.inner([f["row"] for f in features]))
        batch["rehearsal"] = torch.tensor([bool(f["rehearsal"]) for f in features], dtype=torch.bool)
        return batch


def _label_of(row: Any, id2label: Mapping[int, str]) -> str:
    value = None
    if isinstance(row, Mapping):
        value = row.get("labels", row.get("label"))
    else:
        value = getattr(row, "label", None)
    if value is None:
        raise ValueError(f"a training row has no label ('label' / 'labels' key or attribute): {row!r:.200}")
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, int) and not isinstance(value, bool):
        if value not in id2label:
            raise ValueError(f"label id {value} is outside the model's {len(id2label)} labels.")
        return id2label[value]
    return str(value)


def _json_tensor(obj: Any) -> torch.Tensor:
    return torch.frombuffer(bytearray(json.dumps(obj).encode("utf-8")), dtype=torch.uint8).clone()


def _tensor_json(t: torch.Tensor) -> Any:
    return json.loads(bytes(t.to(torch.uint8).tolist()).decode("utf-8"))


class ContinualTrainer(AtomicCheckpointMixin, EngineMixin, Trainer):
    r"""Class-incremental training with rehearsal, NSPT, input-label contrast and distillation (COCONUT).

    Example::

        >>> schedule = TaskSchedule.split(labels, num_tasks=3, seed=0)
        >>> trainer = ContinualTrainer(model, ContinualConfig("out", buffer_size=200, nspt_weight=1.0,
        ...     input_label_weight=1.0), train_dataset=train, eval_dataset=test, schedule=schedule)
        >>> trainer.train()
        >>> trainer.continual_results()["final_average_accuracy"]

    Args:
        model (`Any`): a classifier over every class of the schedule: `config.id2label`, and a forward that takes
            `labels` and returns `logits` (e.g. a [`RelationClassifier`], any `AutoModelForSequenceClassification`,
            encoder-decoders included).
        args (`ContinualConfig | None`, *optional*): [`ContinualConfig`].
        train_dataset (`Any`): rows with a label (`RelationExample`s, or dicts with `label` / `labels`), every
            class of the schedule among them.
        eval_dataset (`Any`, *optional*): test rows; after each task the trainer measures the accuracy on every
            task seen so far (the accuracy matrix).
        schedule (`TaskSchedule | Sequence[Sequence[str]]`): the classes of each task.
        data_collator (`Any`, *optional*): collates rows into model inputs (default: the model's `collator()`, or
            padding of tokenised rows).
        label_texts (`Mapping[str, str]`, *optional*): the text of each class name for the input-label contrast
            (default: the name as words, see [`humanize_label`]).
        label_encoder (`Any`, *optional*): a separate text encoder of the label names (trained with the rest);
            default: the model's own encoder.
        label_tokenizer (`Any`, *optional*): its tokenizer (default: `processing_class`).
    """

    def __init__(
        self,
        model: Any = None,
        args: ContinualConfig | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        schedule: TaskSchedule | Sequence[Sequence[str]] | None = None,
        label_texts: Mapping[str, str] | None = None,
        label_encoder: Any = None,
        label_tokenizer: Any = None,
        **kwargs: Any,
    ) -> None:
        if model is None or not getattr(model.config, "id2label", None):
            raise ValueError("ContinualTrainer needs a classifier whose config has id2label (every class).")
        args = args or ContinualConfig(output_dir="continual-output")
        if not isinstance(args, ContinualConfig):
            raise TypeError(f"args must be a ContinualConfig, got {type(args).__name__}.")
        if train_dataset is None or len(train_dataset) == 0:
            raise ValueError("ContinualTrainer needs a non-empty train_dataset.")
        if schedule is None:
            raise ValueError("ContinualTrainer needs a schedule: the classes of each task (TaskSchedule).")
        self.id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
        self.label2id = {v: k for k, v in self.id2label.items()}
        labels = list(self.label2id)
        self.schedule = schedule if isinstance(schedule, TaskSchedule) else TaskSchedule(schedule, labels)
        TaskSchedule(self.schedule.tasks, labels)  # the model must know every scheduled class
        self.base_train = train_dataset
        self.row_labels = [_label_of(train_dataset[i], self.id2label) for i in range(len(train_dataset))]
        self._check_rows(self.row_labels, "train_dataset")
        self.eval_rows = eval_dataset
        self.eval_labels = (
            [_label_of(eval_dataset[i], self.id2label) for i in range(len(eval_dataset))]
            if eval_dataset is not None
            else None
        )
        scheduled = set(self.schedule.classes)
        in_schedule = sum(1 for lab in self.row_labels if lab in scheduled)
        if args.buffer_size > in_schedule:
            raise ValueError(
                f"buffer_size={args.buffer_size} is larger than the training data: the schedule's classes have "
                f"{in_schedule} rows. A buffer at least that large is joint training; use a smaller buffer."
            )
        unscheduled = sorted({lab for lab in self.row_labels if lab not in scheduled})
        if unscheduled:
            logger.warning(
                f"{len(self.row_labels) - in_schedule} training rows belong to classes in no task "
                f"({unscheduled}); they are not used."
            )
        tokenizer = processing_class if processing_class is not None else getattr(model, "tokenizer", None)
        inner = kwargs.pop("data_collator", None)
        if inner is None:
            if hasattr(model, "collator"):
                inner = model.collator(tokenizer)
            elif tokenizer is not None:
                inner = DataCollatorWithPadding(tokenizer)
            else:
                raise ValueError(
                    "pass data_collator= or processing_class= (a tokenizer) to collate the rows."
                )
        self.row_collator = inner
        self.label_texts = {c: humanize_label(c) for c in labels} | dict(label_texts or {})
        self.label_encoder = label_encoder
        self.label_tokenizer = label_tokenizer if label_tokenizer is not None else tokenizer
        self._label_tokens: dict[tuple[str, ...], dict[str, torch.Tensor]] = {}  # label texts -> their tokens
        if args.input_label_weight > 0 and self.label_tokenizer is None:
            raise ValueError(
                "input_label_weight > 0 needs a tokenizer for the label names (label_tokenizer=)."
            )
        self.buffer = RehearsalBuffer(
            args.buffer_size, args.buffer_selection, args.buffer_class_balanced, seed=args.seed
        )
        self.task = 0
        self.accuracy_matrix: list[list[float]] = []
        self.teacher: nn.Module | None = None
        self.teacher_heads: ContinualHeads | None = None
        self.nspt_loss = NSPTLoss(args.nspt_temperature)
        self.input_label_loss = InputLabelContrastiveLoss(args.input_label_temperature)
        self.root_dir = args.output_dir
        self._needs_features = (
            args.nspt_weight > 0
            or args.input_label_weight > 0
            or (args.buffer_selection == "herding" and args.buffer_size > 0)
        )
        feature_dim, label_dim = self._probe_dims(model, args)
        self.heads = ContinualHeads(
            feature_dim, label_dim, args.projection_dim, args.nspt_weight > 0, args.input_label_weight > 0
        )
        super().__init__(
            model=model,
            args=args,
            train_dataset=_TaskRows(train_dataset, [], []),
            eval_dataset=None,
            processing_class=tokenizer,
            data_collator=_FlaggedCollator(inner),
            **kwargs,
        )
        self.heads.to(self.args.device)
        self.add_callback(_ZeroExtraGrads(self))
        if self.label_encoder is not None:
            self.label_encoder.to(self.args.device)

    # -- checks and set-up --------------------------------------------------------------------------------
    def _check_rows(self, labels: Sequence[str], name: str) -> None:
        unknown = sorted({lab for lab in labels if lab not in self.label2id})
        if unknown:
            raise ValueError(
                f"{name} has labels the model does not know: {unknown}; its labels: {list(self.label2id)}."
            )

    def _probe_dims(self, model: Any, args: ContinualConfig) -> tuple[int, int]:
        """Feature and label-embedding sizes, from one forward of the first row (and of one label name)."""
        if not self._needs_features:
            return 1, 1
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                batch = self.row_collator([self.base_train[0]])
                batch = {
                    k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
                }
                batch.pop("labels", None)
                feature_dim = output_features(
                    model(**batch, output_hidden_states=True), batch.get("attention_mask")
                ).shape[-1]
                label_dim = 1
                if args.input_label_weight > 0:
                    label_dim = self._encode_labels([next(iter(self.label_texts.values()))], model).shape[-1]
        finally:
            model.train(was_training)
        return int(feature_dim), int(label_dim)

    def set_teacher(self, teacher: nn.Module, heads: ContinualHeads | None = None) -> None:
        """Use `teacher` (frozen) as the previous task's model for NSPT and distillation.

        Args:
            teacher (`nn.Module`): a model with the same label space as the trained one.
            heads (`ContinualHeads`, *optional*): its projection heads (default: a frozen copy of the current ones).
        """
        config = getattr(teacher, "config", None)
        theirs = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
        if theirs != self.id2label:
            raise ValueError(
                f"the teacher's label space {theirs} differs from the model's {self.id2label}: NSPT and "
                "distillation compare the two models class by class, so the teacher must be an earlier state "
                "of the same classifier."
            )
        teacher = teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        heads = heads if heads is not None else copy.deepcopy(self.heads)
        for p in heads.parameters():
            p.requires_grad_(False)
        self.teacher, self.teacher_heads = teacher, heads.eval()

    # -- engine and optimiser hooks ----------------------------------------------------------------------
    def _trainable_extras(self) -> list[nn.Parameter]:
        extras = [p for p in self.heads.parameters() if p.requires_grad]
        if self.label_encoder is not None:
            extras += [p for p in self.label_encoder.parameters() if p.requires_grad]
        return extras

    def _parameters_outside_model(self) -> list[nn.Parameter]:
        return self._trainable_extras()

    def _copies_model_weights(self) -> bool:
        return self.args.nspt_weight > 0 or self.args.distillation_weight > 0

    def _weights_outside_forward(self) -> str:
        return "COCONUT's teacher is a frozen copy of the model's weights, taken at every task boundary"

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model) if model is not None else super().create_optimizer()
        extra = self._trainable_extras()
        if extra and not any(p is q for g in optimizer.param_groups for p in g["params"] for q in extra):
            group = {"params": extra, "weight_decay": 0.0}
            if self.args.head_learning_rate is not None:
                group["lr"] = self.args.head_learning_rate
            optimizer.add_param_group(group)
        return optimizer

    # -- the trainer's own state (inside every checkpoint) ----------------------------------------------
    def _dataset_fingerprint(self) -> str:
        return hashlib.sha1("\n".join(self.row_labels).encode("utf-8")).hexdigest()

    def _continual_state(self, finished: bool) -> dict[str, Any]:
        return {
            "task": self.task,
            "task_finished": finished,
            "schedule": self.schedule.to_dict(),
            "buffer": self.buffer.state_dict(),
            "accuracy_matrix": self.accuracy_matrix,
            "dataset_fingerprint": self._dataset_fingerprint(),
        }

    def _state_tensors(self, finished: bool) -> dict[str, torch.Tensor]:
        tensors = {
            f"heads.{k}": v.detach().cpu().contiguous().clone() for k, v in self.heads.state_dict().items()
        }
        if self.label_encoder is not None:
            tensors.update(
                {
                    f"label_encoder.{k}": v.detach().cpu().contiguous().clone()
                    for k, v in self.label_encoder.state_dict().items()
                }
            )
        if self.teacher is not None and not finished:
            for prefix, module in (("teacher", self.teacher), ("teacher_heads", self.teacher_heads)):
                tensors.update(
                    {
                        f"{prefix}.{k}": v.detach().cpu().contiguous().clone()
                        for k, v in module.state_dict().items()
                    }
                )
        tensors[_STATE_KEY] = _json_tensor(self._continual_state(finished))
        return tensors

    def _library_state(self) -> dict[str, torch.Tensor]:
        return self._state_tensors(finished=False)

    def _library_state_required(self) -> bool:
        return True

    def _load_library_state(self, tensors: dict[str, torch.Tensor]) -> None:
        if _STATE_KEY not in tensors:
            raise ValueError("the checkpoint holds no continual state (task, buffer, accuracy matrix).")
        state = _tensor_json(tensors[_STATE_KEY])
        if state["dataset_fingerprint"] != self._dataset_fingerprint():
            raise ValueError(
                "the checkpoint was written for another training set (its rows' labels differ): the rehearsal "
                "buffer holds row indices of that set. Resume with the same train_dataset."
            )
        if state["schedule"] != self.schedule.to_dict():
            raise ValueError(
                f"the checkpoint's task schedule {state['schedule']['tasks']} differs from this trainer's "
                f"{self.schedule.to_dict()['tasks']}."
            )

        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}

        self.heads.load_state_dict(part("heads"))
        if self.label_encoder is not None:
            self.label_encoder.load_state_dict(part("label_encoder"))
        self.task = int(state["task"])
        self.buffer = RehearsalBuffer.from_state_dict(state["buffer"])
        self.accuracy_matrix = [list(map(float, r)) for r in state["accuracy_matrix"]]
        teacher_state = part("teacher")
        if teacher_state:
            teacher = copy.deepcopy(self.accelerator.unwrap_model(self.model))
            teacher.load_state_dict(teacher_state)
            heads = copy.deepcopy(self.heads)
            heads.load_state_dict(part("teacher_heads"))
            self.set_teacher(teacher, heads)
        self.__dict__["_restored_finished"] = bool(state["task_finished"])

    # -- the task loop ----------------------------------------------------------------------------------
    def _task_dir(self, task: int) -> str:
        return os.path.join(self.root_dir, f"task-{task}")

    def _find_resume(self, resume: Any) -> tuple[str, int, str] | None:
        """`(kind, task, path)` to continue from: kind `"checkpoint"` (mid-task) or `"task_end"` (a finished task)."""
        if resume is None or resume is False:
            return None
        if resume is not True:
            path = os.fspath(resume)
            state_file = os.path.join(path, LIBRARY_STATE_NAME)
            if not os.path.isfile(state_file):
                raise ValueError(
                    f"Refusing to resume from {path}: it has no {LIBRARY_STATE_NAME} (continual state)."
                )
            state = _tensor_json(load_file(state_file)[_STATE_KEY])
            return ("task_end" if state["task_finished"] else "checkpoint", int(state["task"]), path)
        for task in reversed(range(len(self.schedule))):
            end = os.path.join(self._task_dir(task), TASK_END)
            if os.path.isfile(os.path.join(end, LIBRARY_STATE_NAME)):
                return "task_end", task, end
            path, skipped = last_complete_checkpoint(self._task_dir(task), self._required_checkpoint_files())
            for line in skipped:
                logger.warning(f"Skipping incomplete checkpoint {line}")
            if path is not None:
                return "checkpoint", task, path
        raise ValueError(f"No complete checkpoint or finished task in {self.root_dir} to resume from.")

    def _task_rows(self, task: int) -> tuple[list[int], list[bool]]:
        classes = set(self.schedule.tasks[task])
        new = [i for i, lab in enumerate(self.row_labels) if lab in classes]
        old = self.buffer.indices() if task > 0 else []
        return new + old, [False] * len(new) + [True] * len(old)

    def _begin_task(self, task: int, restored: bool) -> None:
        self.task = task
        # Each task draws its randomness (data order, dropout) from its own seed, so a run resumed at a task
        # boundary draws exactly what the uninterrupted run drew; a mid-task resume restores the checkpoint's.
        set_seed(self.args.seed + task)
        if task > 0 and not restored and self._copies_model_weights():
            self.set_teacher(copy.deepcopy(self.accelerator.unwrap_model(self.model)))
        indices, flags = self._task_rows(task)
        self.train_dataset = _TaskRows(self.base_train, indices, flags)
        seen = [self.label2id[c] for c in self.schedule.seen_classes(task)]
        mask = torch.zeros(len(self.id2label), dtype=torch.bool)
        mask[seen] = True
        self._seen_mask = mask
        self._seen_ids = torch.tensor(seen)
        self._old_ids = torch.tensor(
            [self.label2id[c] for c in self.schedule.seen_classes(task - 1)] if task else []
        )
        logger.info(
            f"Task {task}: classes {list(self.schedule.tasks[task])}, {flags.count(False)} new rows, "
            f"{flags.count(True)} rehearsal rows."
        )

    def train(
        self,
        resume_from_checkpoint: str | bool | None = None,
        trial: Any = None,
        ignore_keys_for_eval: list[str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Learn every task of the schedule in turn (see the module docstring), from the start or from the furthest
        checkpoint or finished task (`resume_from_checkpoint=True`, or a `checkpoint-N` / `task-end` folder).

        Args:
            resume_from_checkpoint (`str | bool | None`, *optional*): where to continue from.
            trial (`Any`, *optional*): as `Trainer.train`.
            ignore_keys_for_eval (`list[str] | None`, *optional*): as `Trainer.train`.
            kwargs (`Any`): passed on to `Trainer.train`.

        Returns:
            The `TrainOutput` of the last task's run.
        """
        point = self._find_resume(resume_from_checkpoint)
        start, checkpoint = 0, None
        if point is not None:
            kind, task, path = point
            if kind == "task_end":
                self._load_from_checkpoint(path)
                start = task + 1
            else:
                self._load_library_state(load_file(os.path.join(path, LIBRARY_STATE_NAME)))
                start, checkpoint = task, path
        output = None
        try:
            for task in range(start, len(self.schedule)):
                resuming = checkpoint is not None and task == start
                self._begin_task(task, restored=resuming)
                self.args.output_dir = self._task_dir(task)
                self.optimizer, self.lr_scheduler = None, None
                output = super().train(
                    resume_from_checkpoint=checkpoint if resuming else None,
                    trial=trial,
                    ignore_keys_for_eval=ignore_keys_for_eval,
                    **kwargs,
                )
                self._end_task(task)
        finally:
            self.args.output_dir = self.root_dir
        return output

    def _end_task(self, task: int) -> None:
        if self.eval_rows is not None:
            self.accuracy_matrix.append(self.evaluate_tasks(task))
        classes = self.schedule.tasks[task]
        new_rows = {c: [i for i, lab in enumerate(self.row_labels) if lab == c] for c in classes}
        features = None
        if self.args.buffer_selection == "herding" and self.args.buffer_size > 0:
            features = {
                c: self.row_features([self.base_train[i] for i in rows]) for c, rows in new_rows.items()
            }
        self.buffer.update(new_rows, features)
        self.teacher, self.teacher_heads = None, None
        if self.args.should_save:
            with atomic_save(os.path.join(self._task_dir(task), TASK_END)) as staging:
                self.save_model(os.fspath(staging))
                save_file(self._state_tensors(finished=True), os.path.join(staging, LIBRARY_STATE_NAME))
            self._write_results()
        if self.accuracy_matrix:
            metrics = continual_metrics(self.accuracy_matrix)
            self.log({"task": task, "average_accuracy": metrics["final_average_accuracy"]})

    def _write_results(self) -> None:
        path = Path(self.root_dir) / RESULTS_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.continual_results(), indent=1))
        os.replace(tmp, path)

    def continual_results(self) -> dict[str, Any]:
        """The schedule, the accuracy matrix and its summary ([`continual_metrics`]); metrics are absent before the
        first evaluation."""
        out: dict[str, Any] = {
            "schedule": self.schedule.to_dict()["tasks"],
            "accuracy_matrix": self.accuracy_matrix,
        }
        if self.accuracy_matrix:
            out.update(continual_metrics(self.accuracy_matrix))
        return out

    # -- evaluation -------------------------------------------------------------------------------------
    def _batches(self, rows: Sequence[Any]):
        loader = DataLoader(
            list(rows), batch_size=self.args.per_device_eval_batch_size, collate_fn=self.row_collator
        )
        for batch in loader:
            yield {k: v.to(self.args.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    @torch.no_grad()
    def row_features(self, rows: Sequence[Any]) -> torch.Tensor:
        """`[N, D]` features of `rows` from the model in eval mode (see [`output_features`]).

        Args:
            rows (`Sequence[Any]`): dataset rows.
        """
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        out = []
        for batch in self._batches(rows):
            batch.pop("labels", None)
            out.append(
                output_features(model(**batch, output_hidden_states=True), batch.get("attention_mask"))
                .float()
                .cpu()
            )
        model.train(was_training)
        return torch.cat(out)

    @torch.no_grad()
    def evaluate_tasks(self, task: int | None = None) -> list[float]:
        """Accuracy on each task `0..task`'s test classes, predicting among the classes seen up to `task`.

        Args:
            task (`int`, *optional*): the last task learnt (default: the current one).

        Returns:
            `list[float]`: one accuracy per task (`nan` for a task without test rows).
        """
        if self.eval_rows is None:
            raise ValueError("evaluate_tasks needs eval_dataset (the test rows).")
        task = self.task if task is None else task
        seen = self.schedule.seen_classes(task)
        seen_ids = torch.tensor([self.label2id[c] for c in seen])
        keep = [i for i, lab in enumerate(self.eval_labels) if lab in set(seen)]
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        predictions: list[str] = []
        for batch in self._batches([self.eval_rows[i] for i in keep]):
            batch.pop("labels", None)
            logits = model(**batch).logits.float().cpu()
            scores = logits[:, seen_ids] if self.args.mask_unseen_classes else logits
            ids = seen_ids[scores.argmax(-1)] if self.args.mask_unseen_classes else scores.argmax(-1)
            predictions += [self.id2label[int(i)] for i in ids]
        model.train(was_training)
        gold = [self.eval_labels[i] for i in keep]
        accuracies = []
        for j in range(task + 1):
            classes = set(self.schedule.tasks[j])
            pairs = [(g, p) for g, p in zip(gold, predictions) if g in classes]
            accuracies.append(sum(g == p for g, p in pairs) / len(pairs) if pairs else float("nan"))
        return accuracies

    # -- the loss ---------------------------------------------------------------------------------------
    def _encode_labels(self, texts: Sequence[str], model: Any) -> torch.Tensor:
        encoder = self.label_encoder
        if encoder is None:
            base = self.accelerator.unwrap_model(model) if hasattr(self, "accelerator") else model
            encoder = (
                base.get_encoder() if getattr(base.config, "is_encoder_decoder", False) else base.base_model
            )
        key = tuple(texts)
        cache = self._label_tokens
        if key not in cache:  # the seen classes change once a task: tokenise their names once per task
            tokens = self.label_tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
            cache[key] = {
                k: v for k, v in tokens.items() if k in ("input_ids", "attention_mask", "token_type_ids")
            }
        device = next(encoder.parameters()).device
        tokens = {k: v.to(device) for k, v in cache[key].items()}
        return mean_pool(encoder(**tokens).last_hidden_state, tokens["attention_mask"])

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        args = self.args
        inputs = dict(inputs)
        rehearsal = inputs.pop("rehearsal")
        labels = inputs.pop("labels")
        extra = {"output_hidden_states": True} if self._needs_features else {}
        outputs = model(**inputs, **extra)
        logits = upcast(outputs.logits)
        if args.mask_unseen_classes:
            logits = logits.masked_fill(~self._seen_mask.to(logits.device), torch.finfo(logits.dtype).min)
        loss = F.cross_entropy(logits, labels)
        components = {"ce": loss.detach()}
        features = output_features(outputs, inputs.get("attention_mask")) if self._needs_features else None
        teacher_out = None
        if self.teacher is not None and (
            args.distillation_weight > 0 or (args.nspt_weight > 0 and rehearsal.any())
        ):
            self.teacher.to(logits.device)
            with torch.no_grad():
                teacher_out = self.teacher(**inputs, **extra)
        if args.nspt_weight > 0 and teacher_out is not None and bool(rehearsal.any()):
            self.teacher_heads.to(logits.device)
            with torch.no_grad():
                t_feat = output_features(teacher_out, inputs.get("attention_mask"))[rehearsal]
                teacher_proj = self.teacher_heads.nspt(t_feat.to(features.dtype))
            out = self.nspt_loss(self.heads.nspt(features[rehearsal]), teacher_proj, labels[rehearsal])
            loss = loss + args.nspt_weight * out.loss
            components["nspt"] = out.loss.detach()
        new = ~rehearsal
        if args.input_label_weight > 0 and bool(new.any()):
            seen_ids = self._seen_ids.to(labels.device)
            texts = [self.label_texts[self.id2label[int(i)]] for i in seen_ids]
            label_emb = self.heads.label(self._encode_labels(texts, model))
            position = torch.full((len(self.id2label),), -1, dtype=torch.long, device=labels.device)
            position[seen_ids] = torch.arange(len(seen_ids), device=labels.device)
            out = self.input_label_loss(self.heads.input(features[new]), label_emb, position[labels[new]])
            loss = loss + args.input_label_weight * out.loss
            components["input_label"] = out.loss.detach()
        if args.distillation_weight > 0 and teacher_out is not None and len(self._old_ids):
            old = self._old_ids.to(logits.device)
            kd = distillation_loss(
                outputs.logits.float()[:, old],
                teacher_out.logits.float()[:, old],
                args.distillation_temperature,
            )
            loss = loss + args.distillation_weight * kd
            components["distillation"] = kd.detach()
        self.__dict__["last_components"] = components
        return (loss, outputs) if return_outputs else loss


__all__ = [
    "ContinualConfig",
    "ContinualHeads",
    "ContinualTrainer",
    "humanize_label",
    "output_features",
]
