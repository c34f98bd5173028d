"""The cross-encoder teacher of DSE: how its logits are computed, how it is fingerprinted, loaded and trained.

A teacher is taken by its shape, never by its class (this wing does not import the retrieval wing):

- a model with `tokenize_pairs(a, b)` whose forward returns `.logits`, such as the library's
  `CrossEncoderReranker` (its raw logits are used, not `predict`'s sigmoid; it truncates pairs at its own
  `config.max_seq_length`);
- any other `nn.Module` that takes a tokenised pair batch and returns `.logits` (an
  `AutoModelForSequenceClassification`), with its tokenizer;
- a plain callable `(a_texts, b_texts) -> scores`, named by a `teacher_id` (its weights cannot be hashed).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    Trainer,
    TrainingArguments,
)

from hf_contrastive.core.boundary import cap_max_length, corrupt_file_errors, position_limit
from hf_contrastive.core.checkpoint import AtomicCheckpointMixin
from hf_contrastive.core.configuration import registered_model_types
from hf_contrastive.core.data.checks import require_rows
from hf_contrastive.core.engines import EngineMixin
from hf_contrastive.core.utils import atomic_save

TEACHER_KINDS = ("pair_module", "sequence_classifier", "callable")
# Config entries that say where, how or with which library version a model was saved, not what it computes
# (`save_pretrained` fills `architectures` and `dtype`; the class and the weights' dtypes are hashed anyway).
_VOLATILE_CONFIG_KEYS = (
    "_name_or_path",
    "transformers_version",
    "_commit_hash",
    "_attn_implementation_autoset",
    "architectures",
    "dtype",
    "torch_dtype",
)


def teacher_kind(teacher: Any) -> str:
    """How a teacher is called: `"pair_module"`, `"sequence_classifier"` or `"callable"` (see the module doc)."""
    if isinstance(teacher, nn.Module):
        return "pair_module" if callable(getattr(teacher, "tokenize_pairs", None)) else "sequence_classifier"
    if callable(teacher):
        return "callable"
    raise TypeError(
        "teacher must be a model that scores tokenised pairs (a CrossEncoderReranker, an "
        f"AutoModelForSequenceClassification) or a callable (a_texts, b_texts) -> scores; got {type(teacher).__name__}."
    )


def _teacher_tokenizer(teacher: Any, tokenizer: Any) -> Any:
    tokenizer = tokenizer if tokenizer is not None else getattr(teacher, "tokenizer", None)
    if tokenizer is None:
        raise ValueError(
            f"The teacher {type(teacher).__name__} has no tokenizer: pass tokenizer= (the one it was trained with)."
        )
    return tokenizer


def resolve_teacher_max_length(
    teacher: Any, tokenizer: Any = None, max_length: int | None = None
) -> int | None:
    """The pair truncation length the teacher will use (part of the cache key).

    Args:
        teacher (`Any`): the teacher (see the module doc).
        tokenizer (`Any`, *optional*): the tokenizer of a sequence-classification teacher.
        max_length (`int`, *optional*): the length asked for. A `tokenize_pairs` teacher truncates at its own
            `config.max_seq_length` and refuses another value; a sequence classifier defaults to the tokenizer's
            limit (capped at 512 and at the backbone's positions); a callable records the value as given.

    Returns:
        `int | None`: the length.
    """
    if max_length is not None and (
        isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1
    ):
        raise ValueError(f"max_length must be an int >= 1 or None, got {max_length!r}.")
    kind = teacher_kind(teacher)
    if kind == "callable":
        return max_length
    if kind == "pair_module":
        own = getattr(teacher, "truncation_length", None)
        if own is None:
            own = getattr(getattr(teacher, "config", None), "max_seq_length", None)
        if max_length is not None and own is not None and max_length != own:
            raise ValueError(
                f"This teacher ({type(teacher).__name__}) truncates pairs at its own {own} tokens "
                f"(config.max_seq_length); got max_length={max_length}. Set teacher.config.max_seq_length instead."
            )
        return own if own is not None else max_length
    tokenizer = _teacher_tokenizer(teacher, tokenizer)
    if max_length is None:
        tok_max = getattr(tokenizer, "model_max_length", None)
        length = min(int(tok_max), 512) if tok_max and tok_max < 1e6 else 512
        return cap_max_length(length, position_limit(teacher.config), "max_length", warn=False)
    return cap_max_length(max_length, position_limit(getattr(teacher, "config", None)), "max_length")


def _sha256_tensors(named: Sequence[tuple[str, torch.Tensor]]) -> str:
    digest = hashlib.sha256()
    for name, tensor in named:
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    """A config dict without its volatile entries, sub-configs (a head's backbone config) included."""
    return {
        k: _settings(v) if isinstance(v, dict) else v
        for k, v in config.items()
        if k not in _VOLATILE_CONFIG_KEYS
    }


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 of a model's class, its config (without where it was saved from) and every weight and buffer.

    Two copies of the same weights give the same fingerprint wherever they were loaded from; one changed weight,
    another dtype or another head setting gives another.
    """
    digest = hashlib.sha256(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    config = getattr(model, "config", None)
    if config is not None and callable(getattr(config, "to_dict", None)):
        digest.update(json.dumps(_settings(config.to_dict()), sort_keys=True, default=str).encode())
    digest.update(_sha256_tensors(sorted(model.state_dict().items())).encode())
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """SHA-256 of what a tokenizer does: its serialised fast tokenizer, or its vocabulary and class."""
    if tokenizer is None:
        return "none"
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and callable(getattr(backend, "to_str", None)):
        state = json.loads(backend.to_str())
        # The padding and truncation of the last call are stored in the serialised state: not what it does.
        state.pop("padding", None)
        state.pop("truncation", None)
        text = json.dumps(state, sort_keys=True)
    else:
        text = json.dumps(sorted(tokenizer.get_vocab().items()))
    side = f"{type(tokenizer).__name__}|{getattr(tokenizer, 'truncation_side', '')}|{getattr(tokenizer, 'padding_side', '')}"
    return hashlib.sha256((side + "\n" + text).encode()).hexdigest()


def teacher_description(teacher: Any, teacher_id: str | None = None) -> str:
    """A short human name of the teacher for messages and model cards."""
    if teacher_id:
        return teacher_id
    config = getattr(teacher, "config", None)
    source = getattr(config, "_name_or_path", "") if config is not None else ""
    return f"{type(teacher).__name__}({source})" if source else type(teacher).__name__


def pairs_fingerprint(a_texts: Sequence[str], b_texts: Sequence[str]) -> str:
    """SHA-256 of the pairs in order (each text length-prefixed, so no two lists of pairs share a hash)."""
    if len(a_texts) != len(b_texts):
        raise ValueError(f"Got {len(a_texts)} first sentences and {len(b_texts)} second sentences.")
    digest = hashlib.sha256()
    for a, b in zip(a_texts, b_texts):
        if not isinstance(a, str) or not isinstance(b, str):
            raise TypeError(f"Pairs must be strings, got ({type(a).__name__}, {type(b).__name__}).")
        ea, eb = a.encode("utf-8"), b.encode("utf-8")
        digest.update(b"%d:" % len(ea) + ea + b"%d:" % len(eb) + eb)
    return digest.hexdigest()


def _as_scores(value: Any, n: int) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        out = value.detach().float().cpu()
    else:
        out = torch.as_tensor(np.asarray(value, dtype=np.float32))
    if out.dim() == 2 and out.shape[1] == 1:
        out = out[:, 0]
    if out.dim() not in (1, 2) or out.shape[0] != n:
        raise ValueError(
            f"The teacher returned shape {tuple(out.shape)} for {n} pairs; expected [{n}] or [{n}, C]."
        )
    return out


def compute_teacher_logits(
    teacher: Any,
    a_texts: Sequence[str],
    b_texts: Sequence[str],
    tokenizer: Any = None,
    max_length: int | None = None,
    batch_size: int = 32,
    show_progress_bar: bool = False,
) -> torch.Tensor:
    """The teacher's raw logits for pairs `(a_texts[i], b_texts[i])`, in inference mode (no cache).

    Args:
        teacher (`Any`): a `tokenize_pairs` model, a sequence-classification model or a callable (see the module doc).
        a_texts (`Sequence[str]`): first sentences.
        b_texts (`Sequence[str]`): second sentences, as many.
        tokenizer (`Any`, *optional*): the tokenizer of a sequence-classification teacher (default: `teacher.tokenizer`).
        max_length (`int`, *optional*): pair truncation length (see [`resolve_teacher_max_length`]).
        batch_size (`int`, *optional*, defaults to `32`): pairs per forward pass (or per call of a callable).
        show_progress_bar (`bool`, *optional*, defaults to `False`): show a progress bar.

    Returns:
        `torch.Tensor` (float32, CPU): `[N]` for one output per pair (a `[N, 1]` output is squeezed), `[N, C]`
        for class logits.
    """
    a_texts, b_texts = list(a_texts), list(b_texts)
    pairs_fingerprint(a_texts, b_texts)  # type and length checks
    if not a_texts:
        raise ValueError("compute_teacher_logits got no pairs.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}.")
    kind = teacher_kind(teacher)
    length = resolve_teacher_max_length(teacher, tokenizer, max_length)
    order = sorted(range(len(a_texts)), key=lambda i: -(len(a_texts[i]) + len(b_texts[i])))
    starts = range(0, len(order), batch_size)
    if show_progress_bar:
        starts = tqdm(starts, desc="Teacher logits")
    chunks: list[tuple[list[int], torch.Tensor]] = []
    if kind == "callable":
        for s in starts:
            idx = order[s : s + batch_size]
            chunks.append(
                (idx, _as_scores(teacher([a_texts[i] for i in idx], [b_texts[i] for i in idx]), len(idx)))
            )
    else:
        if kind == "pair_module" and getattr(teacher, "tokenizer", None) is None:
            raise ValueError(f"The teacher {type(teacher).__name__} has no tokenizer: set teacher.tokenizer.")
        tok = None if kind == "pair_module" else _teacher_tokenizer(teacher, tokenizer)
        device = next(teacher.parameters()).device
        was_training = teacher.training
        teacher.eval()
        try:
            with torch.inference_mode():
                for s in starts:
                    idx = order[s : s + batch_size]
                    a, b = [a_texts[i] for i in idx], [b_texts[i] for i in idx]
                    if kind == "pair_module":
                        feats = teacher.tokenize_pairs(a, b)
                    else:
                        feats = tok(
                            a,
                            b,
                            padding=True,
                            truncation="longest_first",
                            max_length=length,
                            return_tensors="pt",
                        )
                    out = teacher(**{k: v.to(device) for k, v in feats.items()})
                    logits = out.logits if hasattr(out, "logits") else out[0]
                    chunks.append((idx, _as_scores(logits, len(idx))))
        finally:
            teacher.train(was_training)
    width = chunks[0][1].shape[1:]
    if any(c.shape[1:] != width for _, c in chunks):
        raise ValueError("The teacher returned outputs of different widths for different batches.")
    out = torch.empty((len(a_texts), *width), dtype=torch.float32)
    for idx, values in chunks:
        out[torch.tensor(idx)] = values
    if not torch.isfinite(out).all():
        bad = int((~torch.isfinite(out)).reshape(len(out), -1).any(-1).sum())
        raise ValueError(f"The teacher returned NaN or infinite logits for {bad} of {len(out)} pairs.")
    return out


# -- loading and training a cross-encoder teacher ------------------------------------------------------


def load_teacher(folder: str | os.PathLike) -> tuple[nn.Module, Any]:
    """A saved cross-encoder teacher and its tokenizer.

    Args:
        folder (`str | os.PathLike`): a transformers sequence-classification folder (what [`finetune_teacher`]
            writes), or a folder of a pair-scoring head of this library (a `CrossEncoderReranker`; its wing must
            have been imported, which `import hf_contrastive` does).

    Returns:
        `tuple`: the model (in eval mode) and its tokenizer.
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"{folder} is not a model folder (no config.json): expected a cross-encoder teacher."
        )
    with corrupt_file_errors(folder):
        config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
        if config.model_type in registered_model_types():
            model = AutoModel.from_pretrained(folder, trust_remote_code=False)
            if not callable(getattr(model, "tokenize_pairs", None)):
                raise ValueError(
                    f"{folder} holds a {config.model_type!r} head that does not score pairs; a DSE teacher is a "
                    "cross-encoder (CrossEncoderReranker) or a sequence-classification model."
                )
        else:
            model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=False)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    if getattr(model, "tokenizer", "absent") is None:
        model.tokenizer = tokenizer
    return model.eval(), tokenizer


class _PairCollator:
    """Rows -> a tokenised pair batch (`[CLS] a [SEP] b [SEP]`) with `labels`."""

    def __init__(
        self, tokenizer: Any, columns: tuple[str, str, str], max_length: int, regression: bool
    ) -> None:
        self.tokenizer = tokenizer
        self.columns = columns
        self.max_length = max_length
        self.regression = regression

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        s1, s2, label = self.columns
        feats = dict(
            self.tokenizer(
                [r[s1] for r in rows],
                [r[s2] for r in rows],
                padding=True,
                truncation="longest_first",
                max_length=self.max_length,
                return_tensors="pt",
            )
        )
        values = [r[label] for r in rows]
        feats["labels"] = torch.tensor(values, dtype=torch.float32 if self.regression else torch.long)
        return feats


class CrossEncoderTeacherTrainer(AtomicCheckpointMixin, EngineMixin, Trainer):
    """`Trainer` with whole-or-nothing checkpoints, used by [`finetune_teacher`]."""


def finetune_teacher(
    backbone: str | os.PathLike,
    train_dataset: Any,
    output_dir: str | os.PathLike,
    task: str = "regression",
    num_labels: int | None = None,
    columns: tuple[str, str, str] = ("sentence1", "sentence2", "score"),
    learning_rate: float = 2e-5,
    num_train_epochs: float = 1.0,
    per_device_train_batch_size: int = 16,
    max_length: int = 128,
    warmup_ratio: float = 0.1,
    seed: int = 42,
) -> Path:
    """Fine-tune a cross-encoder teacher (`AutoModelForSequenceClassification`) on labelled pairs; save it.

    Regression teachers (one label, MSE) predict the gold scores themselves, which is the output space the DSE
    student learns in; classification teachers (cross-entropy) give class logits.

    Args:
        backbone (`str | os.PathLike`): an encoder folder (a sentence-transformers folder such as the packaged
            all-MiniLM-L6-v2 works: its top-level transformers weights are read; the classifier is new).
        train_dataset (`datasets.Dataset`): rows with the two sentences and the label.
        output_dir (`str | os.PathLike`): where the teacher is saved (written whole, then swapped in).
        task (`str`, *optional*, defaults to `"regression"`): `"regression"` or `"classification"`.
        num_labels (`int`, *optional*): classes for classification (default 2); 1 for regression.
        columns (`tuple[str, str, str]`, *optional*, defaults to `("sentence1", "sentence2", "score")`): the
            first sentence, second sentence and label columns.
        learning_rate (`float`, *optional*, defaults to 2e-5): AdamW learning rate.
        num_train_epochs (`float`, *optional*, defaults to 1.0): epochs.
        per_device_train_batch_size (`int`, *optional*, defaults to `16`): pairs per step.
        max_length (`int`, *optional*, defaults to `128`): pair truncation length.
        warmup_ratio (`float`, *optional*, defaults to 0.1): share of the steps with a linear warm-up.
        seed (`int`, *optional*, defaults to `42`): the training seed.

    Returns:
        `Path`: `output_dir`.
    """
    if task not in ("regression", "classification"):
        raise ValueError(f"task must be 'regression' or 'classification', got {task!r}.")
    if train_dataset is None or not hasattr(train_dataset, "column_names"):
        raise TypeError(f"train_dataset must be a datasets.Dataset, got {type(train_dataset).__name__}.")
    require_rows(train_dataset, name="train_dataset", owner="finetune_teacher")
    missing = [c for c in columns if c not in train_dataset.column_names]
    if missing:
        raise ValueError(
            f"finetune_teacher: column(s) {missing} not in the dataset columns {train_dataset.column_names}."
        )
    regression = task == "regression"
    labels = 1 if regression else (num_labels or 2)
    model = AutoModelForSequenceClassification.from_pretrained(
        backbone,
        num_labels=labels,
        problem_type="regression" if regression else "single_label_classification",
        trust_remote_code=False,
    )
    tokenizer = AutoTokenizer.from_pretrained(backbone, trust_remote_code=False)
    length = cap_max_length(max_length, position_limit(model.config), "max_length")
    work = Path(output_dir).parent / f".{Path(output_dir).name}.run"
    args = TrainingArguments(
        output_dir=str(work),
        learning_rate=learning_rate,
        num_train_epochs=num_train_epochs,
        per_device_train_batch_size=per_device_train_batch_size,
        warmup_steps=warmup_ratio,
        save_strategy="no",
        report_to="none",
        logging_steps=50,
        seed=seed,
        remove_unused_columns=False,
        disable_tqdm=True,
    )
    trainer = CrossEncoderTeacherTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        data_collator=_PairCollator(tokenizer, columns, length, regression),
    )
    trainer.train()
    with atomic_save(output_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    if work.is_dir() and not any(work.iterdir()):
        work.rmdir()
    return Path(output_dir)


TeacherCallable = Callable[[list[str], list[str]], Any]

__all__ = [
    "TEACHER_KINDS",
    "CrossEncoderTeacherTrainer",
    "TeacherCallable",
    "compute_teacher_logits",
    "finetune_teacher",
    "load_teacher",
    "model_fingerprint",
    "pairs_fingerprint",
    "resolve_teacher_max_length",
    "teacher_description",
    "teacher_kind",
    "tokenizer_fingerprint",
]
