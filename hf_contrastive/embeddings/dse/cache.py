"""Teacher logits computed once and kept on disk, keyed by the teacher, the data and the truncation length.

A cache file is a safetensors file holding the `logits` tensor and, in its metadata, the key it was made
for: the teacher's fingerprint (class, config and a hash of every weight; or the `teacher_id` of a callable),
its tokenizer's fingerprint, a hash of the pairs in order, their number and the pair truncation length.
Reading a cache for another key is refused with a [`TeacherCacheMismatchError`] that names what differs, so
logits of one teacher or data set are never silently used for another. Files are written to a temporary file
in the same folder and renamed into place, so a reader or a killed process never sees half a cache.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from hf_contrastive.core.boundary import CorruptFileError
from hf_contrastive.core.saving import process_umask
from hf_contrastive.embeddings.dse.teacher import (
    compute_teacher_logits,
    model_fingerprint,
    pairs_fingerprint,
    resolve_teacher_max_length,
    teacher_description,
    teacher_kind,
    tokenizer_fingerprint,
)

logger = logging.getLogger(__name__)

CACHE_FORMAT = "hf-contrastive-dse-teacher-logits/1"


class TeacherCacheMismatchError(ValueError):
    """A teacher-logits cache made for another teacher, other data or another truncation length."""


@dataclasses.dataclass(frozen=True)
class TeacherCacheKey:
    """What a teacher-logits cache was computed from.

    Args:
        teacher (`str`): fingerprint of the teacher ([`model_fingerprint`], or `callable:<teacher_id>`).
        tokenizer (`str`): fingerprint of the teacher's tokenizer (`"none"` for callables and `tokenize_pairs`
            teachers, whose tokenizer is part of the model).
        data (`str`): hash of the pairs in order ([`pairs_fingerprint`]).
        num_pairs (`int`): number of pairs.
        max_length (`int`, *optional*): pair truncation length.
        teacher_name (`str`, *optional*, defaults to `""`): a readable name of the teacher, for messages only
            (not compared).
    """

    teacher: str
    tokenizer: str
    data: str
    num_pairs: int
    max_length: int | None
    teacher_name: str = ""

    def differences(self, other: TeacherCacheKey) -> list[str]:
        """What differs between this key (the cache's) and `other` (the one asked for), in words."""
        out = []
        if self.teacher != other.teacher:
            out.append(
                f"teacher (cache: {self.teacher_name or '?'} {self.teacher[:12]}, "
                f"now: {other.teacher_name or '?'} {other.teacher[:12]})"
            )
        if self.tokenizer != other.tokenizer:
            out.append(f"teacher tokenizer (cache: {self.tokenizer[:12]}, now: {other.tokenizer[:12]})")
        if self.data != other.data or self.num_pairs != other.num_pairs:
            out.append(
                f"data (cache: {self.num_pairs} pairs, hash {self.data[:12]}; now: {other.num_pairs} pairs, "
                f"hash {other.data[:12]})"
            )
        if self.max_length != other.max_length:
            out.append(f"max_length (cache: {self.max_length}, now: {other.max_length})")
        return out

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TeacherCacheKey:
        values = json.loads(text)
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(values, dict) or not {"teacher", "tokenizer", "data", "num_pairs"} <= set(values):
            raise ValueError("the key is missing fields")
        return cls(**{k: v for k, v in values.items() if k in names})


def teacher_cache_key(
    teacher: Any,
    a_texts: Sequence[str],
    b_texts: Sequence[str],
    tokenizer: Any = None,
    max_length: int | None = None,
    teacher_id: str | None = None,
) -> TeacherCacheKey:
    """The key of the teacher logits for these pairs.

    Args:
        teacher (`Any`): the teacher (see `hf_contrastive.embeddings.dse.teacher`).
        a_texts (`Sequence[str]`): first sentences.
        b_texts (`Sequence[str]`): second sentences.
        tokenizer (`Any`, *optional*): the tokenizer of a sequence-classification teacher.
        max_length (`int`, *optional*): pair truncation length ([`resolve_teacher_max_length`]).
        teacher_id (`str`, *optional*): required for a callable teacher (its name and version: the only thing
            that identifies it); for a model only a label in messages, its weights are hashed.
    """
    kind = teacher_kind(teacher)
    if kind == "callable":
        if not isinstance(teacher_id, str) or not teacher_id.strip():
            raise ValueError(
                "A callable teacher needs teacher_id= (a name and version that changes whenever its scores "
                "would): it is the cache key, since a function's weights cannot be hashed."
            )
        fingerprint, tok = f"callable:{teacher_id}", "none"
    else:
        fingerprint = model_fingerprint(teacher)
        if kind == "pair_module":
            tok = tokenizer_fingerprint(getattr(teacher, "tokenizer", None))
        else:
            tok = tokenizer_fingerprint(
                tokenizer if tokenizer is not None else getattr(teacher, "tokenizer", None)
            )
    return TeacherCacheKey(
        teacher=fingerprint,
        tokenizer=tok,
        data=pairs_fingerprint(list(a_texts), list(b_texts)),
        num_pairs=len(a_texts),
        max_length=resolve_teacher_max_length(teacher, tokenizer, max_length),
        teacher_name=teacher_description(teacher, teacher_id),
    )


def save_teacher_cache(path: str | os.PathLike, logits: torch.Tensor, key: TeacherCacheKey) -> Path:
    """Write `logits` and `key` to `path` atomically (temporary file in the same folder, then a rename).

    Args:
        path (`str | os.PathLike`): the cache file (`.safetensors`).
        logits (`torch.Tensor`): `[num_pairs]` or `[num_pairs, C]`.
        key ([`TeacherCacheKey`]): what the logits were computed from.
    """
    path = Path(path)
    if not isinstance(logits, torch.Tensor) or logits.dim() not in (1, 2) or logits.shape[0] != key.num_pairs:
        raise ValueError(
            f"logits must be a tensor of shape [{key.num_pairs}] or [{key.num_pairs}, C], got "
            f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}."
        )
    if path.is_dir():
        raise ValueError(
            f"The teacher cache path {path} is a folder; give a file path (e.g. train.safetensors)."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(
            {"logits": logits.detach().float().cpu().contiguous()},
            tmp,
            metadata={"format": CACHE_FORMAT, "key": key.to_json()},
        )
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~process_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_teacher_cache(path: str | os.PathLike, key: TeacherCacheKey | None = None) -> torch.Tensor:
    """The logits stored at `path`, after checking that they were computed for `key`.

    Args:
        path (`str | os.PathLike`): a file written by [`save_teacher_cache`].
        key ([`TeacherCacheKey`], *optional*): the key asked for; `None` skips the check.

    Raises:
        `TeacherCacheMismatchError`: the file was made for another teacher, other data or another length.
        `CorruptFileError`: the file cannot be read, or is not a teacher-logits cache.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No teacher-logits cache at {path}.")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            names = list(f.keys())
            logits = f.get_tensor("logits") if "logits" in names else None
    except (SafetensorError, OSError) as err:
        raise CorruptFileError(
            f"The teacher-logits cache {path} cannot be read ({err}); delete it to have the logits recomputed."
        ) from err
    if metadata.get("format") != CACHE_FORMAT or logits is None:
        raise CorruptFileError(
            f"{path} is not a DSE teacher-logits cache (format {metadata.get('format')!r}, expected "
            f"{CACHE_FORMAT!r}); choose another cache path."
        )
    try:
        stored = TeacherCacheKey.from_json(metadata.get("key", ""))
    except (ValueError, TypeError) as err:
        raise CorruptFileError(f"The key of the teacher-logits cache {path} cannot be read ({err}).") from err
    if key is not None:
        diff = stored.differences(key)
        if diff:
            raise TeacherCacheMismatchError(
                f"The teacher-logits cache {path} was made for another setting; what differs: {'; '.join(diff)}. "
                "Delete the file or give another cache path to compute the logits for this setting."
            )
    if logits.shape[0] != stored.num_pairs:
        raise CorruptFileError(
            f"The teacher-logits cache {path} holds {logits.shape[0]} rows for a key of {stored.num_pairs} pairs."
        )
    return logits


def cached_teacher_logits(
    teacher: Any,
    a_texts: Sequence[str],
    b_texts: Sequence[str],
    cache_path: str | os.PathLike,
    tokenizer: Any = None,
    max_length: int | None = None,
    batch_size: int = 32,
    teacher_id: str | None = None,
    show_progress_bar: bool = False,
    return_key: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, TeacherCacheKey]:
    """The teacher's logits for the pairs: read from `cache_path` when it holds them, else computed and saved.

    A cache file made for another key is refused ([`TeacherCacheMismatchError`]), never overwritten.

    Args:
        teacher (`Any`): the teacher (see `hf_contrastive.embeddings.dse.teacher`).
        a_texts (`Sequence[str]`): first sentences.
        b_texts (`Sequence[str]`): second sentences.
        cache_path (`str | os.PathLike`): the cache file.
        tokenizer (`Any`, *optional*): the tokenizer of a sequence-classification teacher.
        max_length (`int`, *optional*): pair truncation length.
        batch_size (`int`, *optional*, defaults to `32`): pairs per teacher forward.
        teacher_id (`str`, *optional*): the name of a callable teacher (required for callables).
        show_progress_bar (`bool`, *optional*, defaults to `False`): show a progress bar while computing.
        return_key (`bool`, *optional*, defaults to `False`): also return the [`TeacherCacheKey`].

    Returns:
        `torch.Tensor`: `[N]` or `[N, C]` float32 logits, in the order of the pairs (with the key when
        `return_key`).
    """
    key = teacher_cache_key(teacher, a_texts, b_texts, tokenizer, max_length, teacher_id)
    path = Path(cache_path)
    if path.exists():
        logits = load_teacher_cache(path, key)
        logger.info("Teacher logits for %d pairs read from %s", key.num_pairs, path)
        return (logits, key) if return_key else logits
    logits = compute_teacher_logits(
        teacher, a_texts, b_texts, tokenizer, max_length, batch_size, show_progress_bar
    )
    save_teacher_cache(path, logits, key)
    logger.info("Teacher logits for %d pairs computed and cached in %s", key.num_pairs, path)
    return (logits, key) if return_key else logits


__all__ = [
    "CACHE_FORMAT",
    "TeacherCacheKey",
    "TeacherCacheMismatchError",
    "cached_teacher_logits",
    "load_teacher_cache",
    "save_teacher_cache",
    "teacher_cache_key",
]
