"""Checks where user input meets the library: the token limit of a backbone, and readable errors for
model files that cannot be read.

* [`position_limit`] is the number of tokens a backbone can embed (`max_position_embeddings`, less the
  positions RoBERTa-style models reserve below `padding_idx + 1`); [`cap_max_length`] cuts a truncation
  length to it (warning once when a requested length is larger), so long texts are truncated instead of
  reaching torch as a shape mismatch.
* [`corrupt_file_errors`] turns a `json.JSONDecodeError` or a `safetensors` error raised while loading a
  folder into a [`CorruptFileError`] that names the file and says what to do.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

__all__ = ["CorruptFileError", "cap_max_length", "corrupt_file_errors", "position_limit"]

POSITION_OFFSET_MODEL_TYPES = frozenset(
    {
        "camembert",
        "data2vec-text",
        "ibert",
        "longformer",
        "luke",
        "mpnet",
        "roberta",
        "roberta-prelayernorm",
        "xlm-roberta",
        "xlm-roberta-xl",
        "xmod",
    }
)
"""Model types whose position ids start at `padding_idx + 1` (RoBERTa's layout): `padding_idx + 1` of
the `max_position_embeddings` positions never hold a token."""

_WARNED: set[tuple[str, int, int]] = set()


class CorruptFileError(OSError, ValueError):
    """A model file exists but cannot be read (invalid JSON, truncated or corrupt weights).

    It is both an `OSError` (a file problem) and a `ValueError` (what `json` raised before), so code that
    caught either still does.
    """


def _own_limit(config: Any) -> int | None:
    limit = getattr(config, "max_position_embeddings", None)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        return None
    if getattr(config, "model_type", None) in POSITION_OFFSET_MODEL_TYPES:
        pad = getattr(config, "pad_token_id", None)
        limit -= (pad if isinstance(pad, int) and pad >= 0 else 1) + 1
    return limit if limit > 0 else None


def position_limit(config: Any) -> int | None:
    """The most tokens a model built from `config` can embed, or `None` when the config says nothing.

    A composite config (a head whose backbone config is a sub-config, a bi-encoder with two towers) has the
    smallest limit of its sub-configs.

    Args:
        config (`PretrainedConfig` or `PreTrainedModel`, *optional*):
            A model's config, or a model (its `config` is read).

    Returns:
        `int | None`: `max_position_embeddings`, less `padding_idx + 1` for RoBERTa-style models
        (514 -> 512); `None` when neither the config nor a sub-config sets it.
    """
    if config is None:
        return None
    if not hasattr(config, "to_dict") and hasattr(config, "config"):
        config = config.config
    limits = []
    own = _own_limit(config)
    if own is not None:
        limits.append(own)
    for value in vars(config).values() if hasattr(config, "__dict__") else ():
        if value is not config and hasattr(value, "to_dict") and hasattr(value, "model_type"):
            sub = position_limit(value)
            if sub is not None:
                limits.append(sub)
    return min(limits) if limits else None


def cap_max_length(
    max_length: int | None, limit: int | None, what: str = "max_length", warn: bool = True
) -> int | None:
    """`max_length` cut to a backbone's token `limit`, with a warning (once per setting) when it was larger.

    Args:
        max_length (`int`, *optional*):
            The truncation length asked for; `None` means no length was asked for, and `limit` is returned.
        limit (`int`, *optional*):
            The backbone's limit ([`position_limit`]); `None` leaves `max_length` as it is.
        what (`str`, *optional*, defaults to `"max_length"`):
            The setting's name, for the warning.
        warn (`bool`, *optional*, defaults to `True`):
            Warn when `max_length` exceeds `limit`; `False` for lengths the caller derived itself.

    Returns:
        `int | None`: `min(max_length, limit)`.
    """
    if limit is None:
        return max_length
    if max_length is None:
        return limit
    if max_length > limit:
        key = (what, int(max_length), int(limit))
        if warn and key not in _WARNED:
            _WARNED.add(key)
            warnings.warn(
                f"{what}={max_length} exceeds the backbone's limit of {limit} positions "
                f"(max_position_embeddings); texts are truncated to {limit} tokens. Set {what} <= {limit} "
                "to silence this warning.",
                UserWarning,
                stacklevel=3,
            )
        return int(limit)
    return max_length


def _candidates(folder: Path, suffix: str) -> list[Path]:
    if folder.is_file():
        return [folder] if folder.suffix == suffix else []
    if not folder.is_dir():
        return []
    files = sorted(folder.glob(f"*{suffix}")) + sorted(folder.glob(f"*/*{suffix}"))
    return [f for f in files if f.is_file()]


def _bad_json(folder: Path) -> list[Path]:
    bad = []
    for path in _candidates(folder, ".json"):
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            bad.append(path)
    return bad


def _bad_safetensors(folder: Path) -> list[Path]:
    bad = []
    for path in _candidates(folder, ".safetensors"):
        try:
            with safe_open(str(path), framework="pt") as f:
                f.keys()
        except (SafetensorError, OSError, ValueError):
            bad.append(path)
    return bad


@contextlib.contextmanager
def corrupt_file_errors(folder: str | os.PathLike) -> Iterator[None]:
    """Re-raise JSON and safetensors read errors met while loading `folder` as a [`CorruptFileError`].

    The files of `folder` (and of its direct subfolders, where sentence-transformers keeps its modules)
    are checked to name the one that cannot be read; the original error is chained.

    Args:
        folder (`str` or `os.PathLike`):
            The model folder being loaded (a file is checked alone).
    """
    try:
        yield
    except CorruptFileError:
        raise
    except json.JSONDecodeError as err:
        files = _bad_json(Path(folder))
        where = ", ".join(map(str, files)) if files else f"a JSON file of {folder}"
        raise CorruptFileError(
            f"{where} is not valid JSON ({err}): the file is corrupt or was cut short. Restore it, or save or "
            "download the model again."
        ) from err
    except SafetensorError as err:
        files = _bad_safetensors(Path(folder))
        where = ", ".join(map(str, files)) if files else f"a safetensors file of {folder}"
        raise CorruptFileError(
            f"Could not read the weights in {where} ({err}): the file is truncated or corrupt (an interrupted "
            "download or save?). Save or download the model again."
        ) from err
