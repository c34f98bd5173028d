"""Relation classification fine-tuning: [`RelationClassificationTrainer`] and its arguments.

The trainer fine-tunes a [`RelationClassifier`] (typed entity markers, subject-start and object-start
states, MLP head) with cross-entropy, optionally with LoRA (the head trained in full, the marker embeddings
through PEFT's `trainable_token_indices`), and reports micro-F1 without the negative class and, on
SemEval-2010 labels, the official scorer's macro-F1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch.nn.functional as F
from transformers import Trainer, TrainingArguments

from hf_contrastive.core.checkpoint import AtomicCheckpointMixin
from hf_contrastive.core.data.checks import require_rows
from hf_contrastive.core.engines import EngineMixin
from hf_contrastive.core.peft import apply_peft
from hf_contrastive.relation.data import RelationDataset
from hf_contrastive.relation.modeling import RelationClassifier
from hf_contrastive.relation.scoring import relation_scores


def as_relation_dataset(data: Any) -> RelationDataset | None:
    """`data` (a list of `RelationExample`s or dicts, or a `RelationDataset`) as a `RelationDataset`."""
    if data is None:
        return None
    if isinstance(data, RelationDataset):
        return data
    return RelationDataset(data)


def with_marker_tokens(peft_config: Any, tokenizer: Any, markers: Sequence[str]) -> Any:
    """Let LoRA train the new marker embeddings (PEFT's `trainable_token_indices`)."""
    if (
        markers
        and hasattr(peft_config, "trainable_token_indices")
        and peft_config.trainable_token_indices is None
    ):
        peft_config.trainable_token_indices = [int(tokenizer.convert_tokens_to_ids(m)) for m in markers]
    return peft_config


@dataclass
class RelationFinetuneConfig(TrainingArguments):
    r"""Arguments of [`RelationClassificationTrainer`].

    Args:
        label_smoothing (`float`, 0.0): label smoothing of the cross-entropy.
        no_relation_label (`str`, *optional*): class left out of the micro-F1 (defaults to the model's).
        dataset_name (`str`, *optional*): Hub id of the training data, for the model card.
    """

    label_smoothing: float = field(default=0.0, metadata={"help": "Label smoothing."})
    no_relation_label: str | None = field(default=None, metadata={"help": "Negative class for micro-F1."})
    dataset_name: str | None = field(default=None, metadata={"help": "Hub id of the training data."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Examples are objects, keep them."})
    learning_rate: float = field(default=5e-5, metadata={"help": "Learning rate."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Batch size."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Evaluation batch size."})
    report_to: Any = field(default="none", metadata={"help": "Loggers."})
    save_strategy: Any = field(default="no", metadata={"help": "Checkpoints."})


class RelationClassificationTrainer(AtomicCheckpointMixin, EngineMixin, Trainer):
    r"""Fine-tunes a [`RelationClassifier`] with cross-entropy over its labels.

    Datasets are lists of `RelationExample`s (or dicts); the collator comes from the model. Evaluation
    reports `eval_micro_f1` (without the negative class), `eval_accuracy` and, when every label is a
    SemEval-2010 label, `eval_official_macro_f1` (the official scorer's figure).

    Args:
        model (`Any`, *optional*): a [`RelationClassifier`].
        args (`RelationFinetuneConfig | None`, *optional*): [`RelationFinetuneConfig`].
        peft_config (`Any`, *optional*): optional `peft.LoraConfig`; the head is always trained in full and the marker
            embeddings through `trainable_token_indices`.
    """

    def __init__(
        self,
        model: Any = None,
        args: RelationFinetuneConfig | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        peft_config: Any = None,
        **kwargs: Any,
    ) -> None:

        if not isinstance(model, RelationClassifier):
            raise TypeError(
                f"RelationClassificationTrainer needs a RelationClassifier, got {type(model).__name__}."
            )
        args = args or RelationFinetuneConfig(output_dir="re-finetune-output")
        train_dataset, eval_dataset = as_relation_dataset(train_dataset), as_relation_dataset(eval_dataset)
        require_rows(train_dataset, name="train_dataset", owner=type(self).__name__)
        require_rows(eval_dataset, name="eval_dataset", owner=type(self).__name__)
        tokenizer = processing_class or model.tokenizer
        collator = kwargs.pop("data_collator", None) or model.collator(tokenizer)
        self.no_relation_label = args.no_relation_label or model.config.no_relation_label
        self.id2label = dict(model.config.id2label)
        if peft_config is not None:
            if getattr(peft_config, "modules_to_save", None) is None:
                peft_config.modules_to_save = ["classifier"]
            peft_config = with_marker_tokens(peft_config, tokenizer, model.config.marker_tokens)
            model = apply_peft(model, peft_config)
        kwargs.setdefault("compute_metrics", self._metrics)
        super().__init__(
            model=model,
            args=args,
            train_dataset=as_relation_dataset(train_dataset),
            eval_dataset=as_relation_dataset(eval_dataset),
            data_collator=collator,
            processing_class=tokenizer,
            **kwargs,
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = F.cross_entropy(outputs.logits.float(), labels, label_smoothing=self.args.label_smoothing)
        return (loss, outputs) if return_outputs else loss

    def _metrics(self, eval_pred) -> dict[str, float]:

        logits = (
            eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        )
        pred = [self.id2label[int(i)] for i in logits.argmax(-1)]
        gold = [self.id2label[int(i)] for i in eval_pred.label_ids]
        return relation_scores(gold, pred, self.no_relation_label)

    def classifier(self) -> Any:
        """The trained [`RelationClassifier`] (LoRA merged into a copy-free unwrapped model)."""
        model = self.model
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
            self.model = model
        return model


__all__ = [
    "RelationClassificationTrainer",
    "RelationFinetuneConfig",
    "as_relation_dataset",
    "with_marker_tokens",
]
