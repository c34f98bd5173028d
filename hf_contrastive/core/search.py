"""Exact nearest-neighbour search, shared by retrieval evaluation and hard-negative mining.

`encode_texts` embeds texts with whatever encoder it is given (`encode_queries` / `encode_documents`
when the model has them, else `encode`, else the callable itself); `exact_search` and
`topk_chunked` score queries against a corpus in chunks, so memory is bounded by
`num_queries x chunk_size` scores, with no index library.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

SCORE_FUNCTIONS = ("cos_sim", "dot")


def document_text(doc: Mapping[str, str] | str) -> str:
    """The string a document is embedded as: `(title + " " + text).strip()` (BEIR / MTEB)."""
    if isinstance(doc, str):
        return doc
    title = doc.get("title") or ""
    text = doc.get("text") or ""
    return (title + " " + text).strip() if title else text.strip()


def encode_texts(
    model: Any,
    texts: list[str],
    *,
    role: str,
    batch_size: int,
    prompt: str | None,
    show_progress_bar: bool,
) -> torch.Tensor:
    """Embed `texts` with `model.encode_queries` / `encode_documents` when the model has them,
    else `model.encode`; keyword arguments the method does not take are not passed."""
    fn: Callable[..., Any] | None = getattr(model, f"encode_{role}", None)
    if not callable(fn):
        fn = getattr(model, "encode", None)
    if not callable(fn):
        if callable(model):
            fn = model
        else:
            raise TypeError(
                f"Expected a model with encode(texts) (or encode_queries/encode_documents), got "
                f"{type(model).__name__}."
            )
    wanted: dict[str, Any] = {"batch_size": batch_size, "show_progress_bar": show_progress_bar}
    if prompt is not None:
        wanted["prompt"] = prompt
    try:
        params = inspect.signature(fn).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        kwargs = {k: v for k, v in wanted.items() if takes_any or k in params}
    except (TypeError, ValueError):
        kwargs = {}
    if prompt is not None and "prompt" not in kwargs:
        texts = [prompt + t for t in texts]
    if "convert_to_tensor" in kwargs or _accepts(fn, "convert_to_tensor"):
        kwargs["convert_to_tensor"] = True
    out = fn(texts, **kwargs)
    emb = torch.as_tensor(np.asarray(out) if isinstance(out, list) else out).float()
    if emb.ndim != 2 or emb.shape[0] != len(texts):
        raise ValueError(
            f"The model's encoder returned shape {tuple(emb.shape)} for {len(texts)} texts; expected "
            f"[{len(texts)}, dim]."
        )
    return emb


def _name_rows(rows: list[int], ids: Sequence[Any] | None, limit: int = 10) -> str:
    shown = [f"row {r}" + (f" (id {ids[r]!r})" if ids is not None else "") for r in rows[:limit]]
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return ", ".join(shown) + more


def check_embeddings(
    embeddings: torch.Tensor,
    ids: Sequence[Any] | None = None,
    *,
    what: str = "texts",
    refuse_zero: bool = True,
) -> None:
    """Refuse embeddings that would make scores meaningless instead of letting them rank silently.

    A NaN row scores NaN against everything and an all-zero row has no direction (its cosine is taken
    as 0); either way every score ties and the ranking is the id tie-break, which can look perfect.

    Args:
        embeddings (`torch.Tensor`): `[N, D]` embeddings.
        ids (`Sequence[Any] | None`, *optional*): the `N` ids of the rows, named in the error.
        what (`str`, *optional*, defaults to `"texts"`): what the rows are (`"queries"`, `"documents"`).
        refuse_zero (`bool`, *optional*, defaults to `True`): also refuse all-zero rows (set it when scoring by
            cosine: a zero vector has no direction; a dot product with it is a defined score).

    Raises:
        `ValueError`: naming the rows (and ids) with NaN or infinite values, or all zeros with `refuse_zero`.
    """
    emb = torch.as_tensor(embeddings)
    if emb.ndim != 2:
        raise ValueError(f"Expected [N, D] embeddings of the {what}, got shape {tuple(emb.shape)}.")
    bad = torch.nonzero(~torch.isfinite(emb).all(dim=1)).flatten().tolist()
    if bad:
        raise ValueError(
            f"The model returned NaN or infinite embeddings for {len(bad)} of {emb.shape[0]} {what}: "
            f"{_name_rows(bad, ids)}. Every score involving them is undefined (a ranking would only reflect the "
            "id tie-break); check the model's weights and dtype (fp16 overflow) and those inputs."
        )
    if refuse_zero:
        zero = torch.nonzero((emb == 0).all(dim=1)).flatten().tolist()
        if zero:
            raise ValueError(
                f"The model returned all-zero embeddings for {len(zero)} of {emb.shape[0]} {what}: "
                f"{_name_rows(zero, ids)}. Their cosine similarity is undefined (scored 0 for every pair), "
                "so the ranking would only reflect the id tie-break; check the model and its pooling."
            )


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def exact_search(
    query_embeddings: torch.Tensor,
    doc_embeddings: torch.Tensor,
    doc_ids: Sequence[str],
    top_k: int,
    *,
    score_function: str = "cos_sim",
    chunk_size: int = 50_000,
) -> list[list[tuple[str, float]]]:
    """Top `top_k` documents of each query by exact scoring in corpus chunks.

    Args:
        query_embeddings (`torch.Tensor`): `[Q, D]`. doc_embeddings: `[N, D]` aligned with `doc_ids`.
        score_function (`str`, *optional*, defaults to `"cos_sim"`): `"cos_sim"` (embeddings L2-normalised) or `"dot"`.
        chunk_size (`int`, *optional*, defaults to `50000`): documents scored at once (memory `Q x chunk_size`).
    Returns:
        For each query, `[(doc_id, score), ...]` sorted by score, ties by ascending id.
    """
    if score_function not in SCORE_FUNCTIONS:
        raise ValueError(f"score_function must be one of {SCORE_FUNCTIONS}, got {score_function!r}.")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
    if len(doc_ids) != doc_embeddings.shape[0]:
        raise ValueError(f"{len(doc_ids)} document ids for {doc_embeddings.shape[0]} document embeddings.")
    # float64 inputs are scored in float64 (exactly reproducible across chunk sizes); others in float32.
    dtype = torch.float64 if query_embeddings.dtype == torch.float64 else torch.float32
    q = query_embeddings.to(dtype)
    d = doc_embeddings.to(dtype)
    if score_function == "cos_sim":
        q, d = F.normalize(q, dim=-1), F.normalize(d, dim=-1)
    n_q = q.shape[0]
    hits: list[list[tuple[str, float]]] = [[] for _ in range(n_q)]
    for start in range(0, d.shape[0], chunk_size):
        chunk_ids = doc_ids[start : start + chunk_size]
        scores = q @ d[start : start + chunk_size].T
        k = min(top_k, scores.shape[1])
        vals, idx = torch.topk(scores, k, dim=1)
        # Documents tied with the k-th score are all candidates, so that the id tie-break is exact.
        boundary = (scores >= vals[:, -1:]).sum(dim=1) > k
        vals_l, idx_l = vals.tolist(), idx.tolist()
        for i in range(n_q):
            if boundary[i]:
                cand = torch.nonzero(scores[i] >= vals[i, -1]).flatten().tolist()
                pairs = [(chunk_ids[j], float(scores[i, j])) for j in cand]
            else:
                pairs = [(chunk_ids[j], s) for j, s in zip(idx_l[i], vals_l[i])]
            merged = hits[i] + pairs
            merged.sort(key=lambda x: (-x[1], x[0]))
            hits[i] = merged[:top_k]
    return hits


def topk_chunked(
    q: torch.Tensor, d: torch.Tensor, k: int, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k of `q @ d.T` with at most `chunk_size` documents scored at once."""
    best_s: torch.Tensor | None = None
    best_i: torch.Tensor | None = None
    for start in range(0, d.shape[0], chunk_size):
        s = q @ d[start : start + chunk_size].T
        kk = min(k, s.shape[1])
        cs, ci = torch.topk(s, kk, dim=1)
        ci = ci + start
        if best_s is None:
            best_s, best_i = cs, ci
        else:
            cat_s, cat_i = torch.cat([best_s, cs], 1), torch.cat([best_i, ci], 1)
            best_s, pos = torch.topk(cat_s, min(k, cat_s.shape[1]), dim=1)
            best_i = cat_i.gather(1, pos)
    assert best_s is not None and best_i is not None
    return best_s, best_i


__all__ = [
    "SCORE_FUNCTIONS",
    "check_embeddings",
    "document_text",
    "encode_texts",
    "exact_search",
    "topk_chunked",
]
