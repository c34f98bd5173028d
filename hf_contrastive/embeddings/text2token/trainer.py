"""`Text2TokenTrainer`: train a `SentenceEncoder` by token target prediction (Text2Token, An et al. 2025).

It is a [`ContrastiveTrainer`] whose batches are texts with target token distributions instead of role-named
texts: each text is embedded, its pooled representation is projected onto the vocabulary
([`VocabularyProjection`]) and [`Text2TokenLoss`] pulls that distribution towards the target. Everything else is
the contrastive trainer's: LoRA through `peft_config=`, STS evaluation (`sts_evaluator=`), whole checkpoints and
exact resume, and `save_encoder` / `push_to_hub` of the encoder with LoRA merged and its model card.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from hf_contrastive.core.boundary import cap_max_length, position_limit
from hf_contrastive.core.data.checks import require_rows
from hf_contrastive.core.losses import registry as loss_registry
from hf_contrastive.embeddings.modeling import SentenceEncoder
from hf_contrastive.embeddings.sts import STSEvaluator
from hf_contrastive.embeddings.text2token.losses import Text2TokenLoss
from hf_contrastive.embeddings.text2token.projection import VocabularyProjection, unwrap_encoder
from hf_contrastive.embeddings.text2token.targets import check_token_targets
from hf_contrastive.embeddings.trainer import ContrastiveConfig, ContrastiveTrainer

__all__ = ["Text2TokenCollator", "Text2TokenConfig", "Text2TokenTrainer"]

_TEXT, _IDS, _WEIGHTS = "text", "target_ids", "target_weights"
_FEATURES = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class Text2TokenConfig(ContrastiveConfig):
    r"""Training arguments of [`Text2TokenTrainer`]: [`ContrastiveConfig`] with the Text2Token objective.

    Args:
        loss (`str`, *optional*, defaults to `"text2token"`):
            The objective; only `text2token` is accepted.
        temperature (`float`, *optional*, defaults to `1.0`):
            Divides the vocabulary logits before the softmax (1.0: the LM head as it is).
        detach_projection (`bool`, *optional*, defaults to `False`):
            Keep the loss's gradient out of the vocabulary projection (see [`Text2TokenLoss`]).
        text_column (`str`, *optional*, defaults to `"text"`):
            Column of the texts.
        target_ids_column (`str`, *optional*, defaults to `"target_ids"`):
            Column of each text's target token ids (lists of ints).
        target_weights_column (`str`, *optional*, defaults to `"target_weights"`):
            Column of their weights (lists of floats summing to one).
        targets_name (`str`, *optional*):
            How the targets were made (`"data-driven (tf-idf)"`, `"model-derived"`), for the model card.
    """

    loss: str = field(default="text2token", metadata={"help": "The objective (only text2token)."})
    temperature: float = field(default=1.0, metadata={"help": "Temperature of the vocabulary softmax."})
    detach_projection: bool = field(
        default=False, metadata={"help": "No gradient from the loss into the vocabulary projection."}
    )
    text_column: str = field(default=_TEXT, metadata={"help": "Column of the texts."})
    target_ids_column: str = field(default=_IDS, metadata={"help": "Column of the target token ids."})
    target_weights_column: str = field(default=_WEIGHTS, metadata={"help": "Column of the target weights."})
    targets_name: str | None = field(
        default=None, metadata={"help": "How the targets were made (model card)."}
    )

    def __post_init__(self) -> None:
        if (
            not loss_registry.is_registered(self.loss)
            or loss_registry.resolve_loss_name(self.loss) != "text2token"
        ):
            raise ValueError(f"Text2TokenConfig trains loss='text2token' only, got loss={self.loss!r}.")
        if self.gradcache_mini_batch_size is not None or self.gradcache_token_budget is not None:
            raise ValueError(
                "Text2TokenTrainer does not use GradCache (the loss has no in-batch negatives): lower "
                "per_device_train_batch_size or use gradient_accumulation_steps instead."
            )
        names = (self.text_column, self.target_ids_column, self.target_weights_column)
        if len(set(names)) != 3 or not all(isinstance(n, str) and n for n in names):
            raise ValueError(
                f"text_column, target_ids_column and target_weights_column must be distinct names, got {names}."
            )
        super().__post_init__()


@dataclass
class Text2TokenCollator:
    """Tokenise the texts of a batch and pad their targets.

    Returns `input_ids`, `attention_mask` (and `token_type_ids` when the tokenizer makes them), `target_ids`
    (`(batch_size, k)`, padded with id 0) and `target_weights` (float32, padded with weight 0), `k` being the
    longest target of the batch.

    Args:
        tokenizer (`PreTrainedTokenizerBase`):
            The model's tokenizer.
        max_length (`int`, *optional*):
            Truncation length, cut to `position_limit`.
        position_limit (`int`, *optional*):
            The backbone's token limit.
        text_column (`str`, *optional*, defaults to `"text"`):
            Column of the texts.
    """

    tokenizer: Any
    max_length: int | None = None
    position_limit: int | None = None
    text_column: str = _TEXT

    def __post_init__(self) -> None:
        self.max_length = cap_max_length(self.max_length, self.position_limit, "max_seq_length")

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("Text2TokenCollator got an empty batch.")
        missing = [c for c in (self.text_column, _IDS, _WEIGHTS) if c not in rows[0]]
        if missing:
            raise ValueError(f"Text2TokenCollator: rows lack the column(s) {missing}; got {sorted(rows[0])}.")
        batch = dict(
            self.tokenizer(
                [row[self.text_column] for row in rows],
                padding=True,
                truncation=self.max_length is not None,
                max_length=self.max_length,
                return_tensors="pt",
            )
        )
        width = max(len(row[_IDS]) for row in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        weights = torch.zeros(len(rows), width, dtype=torch.float32)
        for i, row in enumerate(rows):
            if len(row[_IDS]) != len(row[_WEIGHTS]):
                raise ValueError(
                    f"Text2TokenCollator: a row has {len(row[_IDS])} target ids but {len(row[_WEIGHTS])} weights."
                )
            n = len(row[_IDS])
            ids[i, :n] = torch.as_tensor(row[_IDS], dtype=torch.long)
            weights[i, :n] = torch.as_tensor(row[_WEIGHTS], dtype=torch.float32)
        batch[_IDS] = ids
        batch[_WEIGHTS] = weights
        return batch


class Text2TokenTrainer(ContrastiveTrainer):
    r"""Train a [`SentenceEncoder`] with Text2Token's token target prediction.

    A subclass of [`ContrastiveTrainer`] (so the training loop, LoRA, STS evaluation, checkpoints and the saved
    encoder are the same) whose loss is [`Text2TokenLoss`] on the pooled representation (`pooled`, before any
    projection head and normalisation) projected onto the vocabulary.

    Args:
        model (`SentenceEncoder | str`, *optional*):
            The encoder, or a folder / Hub id to load it from.
        args (`Text2TokenConfig`, *optional*):
            The training arguments.
        train_dataset (`datasets.Dataset`, *optional*):
            Texts with their targets (see [`token_target_dataset`]); the column names are in `args`. Other columns
            are ignored.
        eval_dataset (`datasets.Dataset`, *optional*):
            Same layout; `evaluate()` reports its `eval_loss`.
        processing_class (`PreTrainedTokenizerBase`, *optional*):
            The tokenizer; defaults to the model's.
        projection (`VocabularyProjection`, *optional*):
            The vocabulary projection; defaults to the encoder's tied input embeddings (SmolLM2's LM head, MiniLM's
            word embeddings). A projection of its own is frozen and not saved: pass the same one when resuming.
        sts_evaluator (`STSEvaluator`, *optional*):
            Reported by `evaluate()` as `eval_sts_spearman`.
        evaluators (`list`, *optional*):
            More evaluators (see [`ContrastiveTrainer`]).
        peft_config (`peft.PeftConfig`, *optional*):
            A LoRA config; the encoder is wrapped with `hf_contrastive.core.peft.apply_peft`.
        callbacks (`list`, *optional*):
            `Trainer` callbacks.
        optimizers (`tuple`, *optional*, defaults to `(None, None)`):
            `Trainer`'s optimizer and scheduler.
        **kwargs (`Any`):
            Other `Trainer` arguments (`data_collator` replaces [`Text2TokenCollator`]).
    """

    def __init__(
        self,
        model: Any = None,
        args: Text2TokenConfig | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        projection: VocabularyProjection | None = None,
        sts_evaluator: STSEvaluator | Any = None,
        evaluators: list | None = None,
        peft_config: Any = None,
        callbacks: list | None = None,
        optimizers: tuple = (None, None),
        **kwargs: Any,
    ) -> None:
        if args is None:
            args = Text2TokenConfig(output_dir="hf-contrastive-output")
        if not isinstance(args, Text2TokenConfig):
            raise TypeError(f"args must be a Text2TokenConfig, got {type(args).__name__}.")
        if isinstance(model, (str, os.PathLike)):
            model = SentenceEncoder.from_pretrained(model)
        if model is None:
            raise ValueError("Text2TokenTrainer needs a model (a SentenceEncoder or a path to one).")
        loss = kwargs.pop("loss", None)
        if loss is not None and not isinstance(loss, Text2TokenLoss):
            raise TypeError(f"Text2TokenTrainer trains a Text2TokenLoss, got loss={type(loss).__name__}.")
        if projection is None:
            projection = VocabularyProjection()
        if not isinstance(projection, VocabularyProjection):
            raise TypeError(f"projection must be a VocabularyProjection, got {type(projection).__name__}.")
        projection.check_encoder(model)
        vocab = projection.weights_for(model)[0].shape[0]
        if train_dataset is None:
            raise ValueError(
                "Text2TokenTrainer needs a train_dataset of texts with target token distributions."
            )
        train_dataset = self._prepare_dataset(train_dataset, args, "train_dataset", vocab)
        if isinstance(eval_dataset, Mapping):
            eval_dataset = {
                k: self._prepare_dataset(v, args, f"eval_dataset[{k!r}]", vocab)
                for k, v in eval_dataset.items()
            }
        elif eval_dataset is not None:
            eval_dataset = self._prepare_dataset(eval_dataset, args, "eval_dataset", vocab)
        tokenizer = processing_class if processing_class is not None else getattr(model, "tokenizer", None)
        base = unwrap_encoder(model)
        collator = kwargs.pop("data_collator", None)
        if collator is None and tokenizer is not None:
            collator = Text2TokenCollator(
                tokenizer,
                max_length=args.max_seq_length or getattr(base.config, "max_seq_length", None),
                position_limit=position_limit(base),
            )
        self.projection = projection
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            sts_evaluator=sts_evaluator,
            evaluators=evaluators,
            loss=loss if loss is not None else Text2TokenLoss(args.temperature, args.detach_projection),
            peft_config=peft_config,
            callbacks=callbacks,
            optimizers=optimizers,
            data_collator=collator,
            **kwargs,
        )
        self.projection.to(self.args.device)

    @staticmethod
    def _prepare_dataset(dataset: Any, args: Text2TokenConfig, name: str, vocab: int) -> Any:
        """The dataset's text and target columns, renamed to `text` / `target_ids` / `target_weights`, checked."""
        columns = getattr(dataset, "column_names", None)
        if columns is None:
            raise TypeError(f"{name} must be a datasets.Dataset, got {type(dataset).__name__}.")
        require_rows(dataset, name=name, owner="Text2TokenTrainer")
        wanted = (args.text_column, args.target_ids_column, args.target_weights_column)
        missing = [c for c in wanted if c not in columns]
        if missing:
            raise ValueError(
                f"{name} lacks the column(s) {missing}; found {columns}. Text2Token trains on texts with target "
                "token distributions: build them with tfidf_targets / model_derived_targets and "
                "token_target_dataset, or name the columns with text_column / target_ids_column / "
                "target_weights_column."
            )
        if list(columns) != list(wanted):
            dataset = dataset.select_columns(list(wanted))
        renames = {old: new for old, new in zip(wanted, (_TEXT, _IDS, _WEIGHTS)) if old != new}
        if renames:
            dataset = dataset.rename_columns(renames)
        texts = dataset[_TEXT]
        blank = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
        if blank:
            raise ValueError(
                f"{name}: {len(blank)} row(s) have an empty or non-string text (first at row {blank[0]}); "
                "every row needs a text to embed."
            )
        check_token_targets(dataset[_IDS], dataset[_WEIGHTS], vocab, owner=name)
        return dataset

    # -- loss -----------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        missing = [k for k in ("input_ids", _IDS, _WEIGHTS) if k not in inputs]
        if missing:
            raise ValueError(f"Text2TokenTrainer: the batch lacks {missing}; got {sorted(inputs)}.")
        out = model(**{k: v for k, v in inputs.items() if k in _FEATURES})
        weight, bias = self.projection.weights_for(model)
        result = self.loss_fn(out.pooled, weight, inputs[_IDS], inputs[_WEIGHTS], projection_bias=bias)
        loss = result.loss
        if not torch.isfinite(loss.detach()):
            self._stop_on_nan(float(loss.detach()))
        if model.training:
            for k, v in result.components.items():
                self._components[k].append(float(v))
        return (loss, {"embeddings": out.embeddings}) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    # -- card -----------------------------------------------------------------------------------
    def _fill_card(self) -> None:
        super()._fill_card()
        base = unwrap_encoder(self.model)
        info = getattr(base, "card_info", None)
        if info is None:
            return
        weight, _ = self.projection.weights_for(base)
        info.training["data layout"] = (
            "texts with target token distributions (Text2Token token target prediction)"
        )
        info.training["vocabulary projection"] = (
            f"tied input embeddings ({weight.shape[0]} x {weight.shape[1]})"
            if self.projection.tied
            else f"frozen LM head ({weight.shape[0]} x {weight.shape[1]})"
        )
        if self.args.targets_name:
            info.training["token targets"] = self.args.targets_name
        info.tags = list(dict.fromkeys([*info.tags, "text2token"]))
