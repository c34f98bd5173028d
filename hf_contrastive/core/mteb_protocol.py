"""The `mteb` encoder protocol, shared by the library's encoders.

`mteb` (2.x) evaluates any object that has `encode(inputs, *, task_metadata, hf_split, hf_subset,
prompt_type, **kwargs)`, `similarity`, `similarity_pairwise` and an `mteb_model_meta` property. Its
`inputs` is a `torch.utils.data.DataLoader` whose batches are dicts with a `"text"` list; `prompt_type`
is `"query"`, `"document"` or `None` (symmetric tasks such as STS).

This module turns such a call into the library's own text API, duck-typed on the model: `encode(texts,
...)`, `encode_queries(texts, ...)` and `encode_documents(texts, ...)`. Queries go to `encode_queries`
and documents to `encode_documents` (so a bi-encoder routes them to its towers and prompts); a prompt
named for the task in the model's prompts is used first, in mteb's order of precedence. `mteb` itself is
imported only inside `model_meta`, so the library runs without it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

__all__ = [
    "MTEB_ENCODE_OPTIONS",
    "encode_batched_inputs",
    "is_batched_inputs",
    "model_meta",
    "model_name_for_mteb",
    "prompt_type_value",
    "task_prompt_name",
    "texts_from_batches",
]

# Keyword arguments mteb passes to `encode` (its `EncodeKwargs`) that the text API takes as they are.
MTEB_ENCODE_OPTIONS = ("batch_size", "show_progress_bar")
_PROMPT_TYPES = ("query", "document")
_ROLE_METHODS = {"query": "encode_queries", "document": "encode_documents"}
# `ScoringFunction` member names for each `similarity_fn` of the library's configs.
_SCORING_FUNCTIONS = {
    "cosine": "COSINE",
    "dot": "DOT_PRODUCT",
    "euclidean": "EUCLIDEAN",
    "manhattan": "MANHATTAN",
}
MTEB_INSTALL_HINT = "pip install 'hf-contrastive[mteb]' (or pip install mteb)"


def is_batched_inputs(inputs: Any) -> bool:
    """Whether `inputs` is mteb's batched input (a `torch.utils.data.DataLoader`), not texts."""
    return isinstance(inputs, DataLoader)


def texts_from_batches(inputs: DataLoader) -> list[str]:
    """The texts of an mteb `DataLoader`, in order (each batch is a dict with a `"text"` list).

    Raises:
        `ValueError`: when a batch has no `"text"` entry (image, audio or video inputs) or holds
            something other than strings.
    """
    texts: list[str] = []
    for number, batch in enumerate(inputs):
        if not isinstance(batch, Mapping) or "text" not in batch:
            keys = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
            raise ValueError(
                f"mteb input batch {number} has no 'text' entry (found {keys}); this encoder embeds text only."
            )
        column = batch["text"]
        column = [column] if isinstance(column, str) else list(column)
        bad = [i for i, t in enumerate(column) if not isinstance(t, str)]
        if bad:
            raise ValueError(
                f"mteb input batch {number} holds a non-string text at position {bad[0]} "
                f"({type(column[bad[0]]).__name__}); this encoder embeds strings only."
            )
        texts.extend(column)
    return texts


def prompt_type_value(prompt_type: Any) -> str | None:
    """`"query"`, `"document"` or `None` from mteb's `PromptType` (a string enum) or a plain string."""
    if prompt_type is None:
        return None
    value = getattr(prompt_type, "value", prompt_type)
    if value not in _PROMPT_TYPES:
        raise ValueError(f"prompt_type must be 'query', 'document' or None, got {prompt_type!r}.")
    return str(value)


def task_prompt_name(
    prompts: Mapping[str, str] | None, task_metadata: Any, prompt_type: str | None
) -> str | None:
    """The name of the model prompt written for this task, in mteb's order of precedence.

    mteb looks a prompt up as `"{task name}-{prompt type}"`, then the task name, then
    `"{task type}-{prompt type}"` (task types are `"STS"`, `"Retrieval"`, ...), then the task type.
    The last level of mteb's order, the prompt type alone (`"query"`, `"document"`), is left to the
    model's `encode_queries` / `encode_documents`, which already apply those prompts.

    Args:
        prompts (`Mapping[str, str] | None`): the model's named prompts (`config.prompts`).
        task_metadata (`Any`): mteb's `TaskMetadata` (its `name` and `type` are read), or `None`.
        prompt_type (`str | None`): `"query"`, `"document"` or `None`.

    Returns:
        `str | None`: a key of `prompts`, or `None` when no prompt names this task or its type.
    """
    if not prompts or task_metadata is None:
        return None
    candidates = []
    for key in (getattr(task_metadata, "name", None), getattr(task_metadata, "type", None)):
        if key:
            if prompt_type is not None:
                candidates.append(f"{key}-{prompt_type}")
            candidates.append(str(key))
    return next((c for c in candidates if c in prompts), None)


def encode_batched_inputs(
    model: Any,
    inputs: DataLoader,
    *,
    task_metadata: Any = None,
    hf_split: str | None = None,
    hf_subset: str | None = None,
    prompt_type: Any = None,
    prompts: Mapping[str, str] | None = None,
    options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> np.ndarray:
    """Embed mteb's batched inputs with the model's text API; returns a float32 `[N, D]` array.

    Args:
        model (`Any`): an encoder with `encode(texts, **options)`, and `encode_queries` / `encode_documents`
            for asymmetric tasks.
        inputs (`DataLoader`): mteb's batches (dicts with a `"text"` list).
        task_metadata (`Any`, *optional*): mteb's `TaskMetadata` of the task being run (prompt lookup).
        hf_split (`str | None`, *optional*): the split being run (unused: the embedding does not depend on it).
        hf_subset (`str | None`, *optional*): the subset being run (unused).
        prompt_type (`Any`, *optional*): `"query"` -> `model.encode_queries`, `"document"` ->
            `model.encode_documents`, `None` -> `model.encode`.
        prompts (`Mapping[str, str] | None`, *optional*): the model's named prompts; a prompt named for
            the task (see `task_prompt_name`) is passed as `prompt_name=` to `model.encode`.
        options (`Mapping[str, Any] | None`, *optional*): keyword arguments of the text API the caller set
            (`normalize`, `max_length`, `tokenizer`, ...), passed on as they are.
        kwargs (`Any`): the rest of mteb's `EncodeKwargs`: `batch_size` and `show_progress_bar` are passed
            on; `precision` must be `"float32"` (or absent), the only precision these encoders produce.

    Raises:
        `TypeError`: for a keyword argument mteb's protocol does not define.
        `ValueError`: for a precision other than float32, an unknown prompt type, non-text inputs, or an
            explicit `prompt` / `prompt_name` (with mteb the prompt follows the task and `prompt_type`).
    """
    del hf_split, hf_subset  # the same text embeds the same way on every split and subset
    precision = kwargs.pop("precision", None)
    if precision not in (None, "float32"):
        raise ValueError(
            f"precision={precision!r} is not supported: these encoders return float32 embeddings only."
        )
    unknown = sorted(k for k in kwargs if k not in MTEB_ENCODE_OPTIONS)
    if unknown:
        raise TypeError(
            f"encode() with mteb inputs got unexpected keyword argument(s) {unknown}; mteb passes "
            f"task_metadata, hf_split, hf_subset, prompt_type and {list(MTEB_ENCODE_OPTIONS)} (+ precision)."
        )
    call = {k: v for k, v in (options or {}).items() if v is not None}
    explicit = sorted(k for k in ("prompt", "prompt_name") if k in call)
    if explicit:
        raise ValueError(
            f"encode() with mteb inputs takes no {explicit}: the prompt follows the task and prompt_type "
            "(the model's prompts named after the task, its type, 'query' or 'document')."
        )
    call.update({k: v for k, v in kwargs.items() if v is not None})
    role = prompt_type_value(prompt_type)
    texts = texts_from_batches(inputs)
    name = task_prompt_name(prompts, task_metadata, role)
    fn: Callable[..., Any]
    if name is not None:
        fn = model.encode
        call["prompt_name"] = name
    elif role is not None:
        method = _ROLE_METHODS[role]
        fn = getattr(model, method, None)
        if not callable(fn):
            raise TypeError(f"{type(model).__name__} has no {method}() for mteb's {role} inputs.")
    else:
        fn = model.encode
    out = fn(texts, **call)
    array = (
        out.detach().float().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out, np.float32)
    )
    if array.ndim != 2 or array.shape[0] != len(texts):
        raise ValueError(f"The encoder returned shape {array.shape} for {len(texts)} texts; expected [N, D].")
    return array.astype(np.float32, copy=False)


def model_name_for_mteb(name_or_path: str | os.PathLike | None, fallback: str) -> str:
    """A model name in mteb's `"organization/model"` form.

    A Hub id (`"sentence-transformers/all-MiniLM-L6-v2"`) is kept; a local folder becomes
    `"local/<folder name>"`; a model without a source becomes `"hf-contrastive/<fallback>"`.
    """
    text = str(name_or_path or "").rstrip("/\\")
    if not text:
        return f"hf-contrastive/{fallback}"
    if os.path.isdir(text) or os.path.isabs(text) or text.startswith("."):
        return f"local/{os.path.basename(text) or fallback}"
    if text.count("/") == 1:
        return text
    return f"hf-contrastive/{text.replace('/', '_')}"


def model_meta(
    *,
    name: str,
    revision: str | None,
    embed_dim: int,
    max_tokens: int | None,
    similarity_fn: str,
    n_parameters: int,
    use_instructions: bool,
) -> Any:
    """mteb's `ModelMeta` for one of the library's encoders (imports `mteb`).

    Args:
        name (`str`): `"organization/model"` (see `model_name_for_mteb`).
        revision (`str | None`): the checkpoint's revision, when known.
        embed_dim (`int`): embedding size.
        max_tokens (`int | None`): the truncation length of the encoder.
        similarity_fn (`str`): the config's `similarity_fn` (`cosine`, `dot`, `euclidean`, `manhattan`).
        n_parameters (`int`): number of parameters.
        use_instructions (`bool`): whether the encoder prepends prompts.

    Raises:
        `ImportError`: when `mteb` is not installed, saying how to install it.
    """
    try:
        from mteb.models.model_meta import ModelMeta, ScoringFunction
    except ImportError as err:
        raise ImportError(f"mteb_model_meta needs the mteb package: {MTEB_INSTALL_HINT}.") from err
    if similarity_fn not in _SCORING_FUNCTIONS:
        raise ValueError(
            f"Unknown similarity_fn {similarity_fn!r}; expected one of {sorted(_SCORING_FUNCTIONS)}."
        )
    return ModelMeta.create_empty(
        overwrites={
            "name": name,
            "revision": revision,
            "embed_dim": int(embed_dim),
            "max_tokens": None if max_tokens is None else int(max_tokens),
            "similarity_fn_name": getattr(ScoringFunction, _SCORING_FUNCTIONS[similarity_fn]),
            "n_parameters": int(n_parameters),
            "framework": ["PyTorch"],
            "modalities": ["text"],
            "use_instructions": bool(use_instructions),
        }
    )
