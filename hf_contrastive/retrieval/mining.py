"""Hard-negative mining for retrieval training.

For every (anchor, positive) row, embed the anchor and a corpus, rank the corpus by exact
similarity (in chunks, no index library), drop the anchor's own positives, optionally rescore
the candidates with a reranker, filter them by score and margin against the positive, and keep
`num_negatives` of the survivors from the rank window `[range_min, range_max)`. The
selection rules are those of sentence-transformers' `mine_hard_negatives` and of
NV-Retriever (Moreira et al. 2024, "NV-Retriever: Improving text embedding models with
effective hard-negative mining"), whose best setting is `relative_margin=0.05` with
`sampling_strategy="top"` ("TopK-PercPos 95%").

The result is a `datasets.Dataset` laid out for [`ContrastiveTrainer`] (`anchor`,
`positive`, `negative` or `negative_1..n` columns), or for pointwise reranker training
(`labeled-pair`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from datasets import Dataset

from hf_contrastive.core.search import document_text, encode_texts, topk_chunked

logger = logging.getLogger(__name__)

OUTPUT_FORMATS = ("triplet", "n-tuple", "labeled-pair")
SAMPLING_STRATEGIES = ("top", "random")


def _corpus_texts(corpus: Any) -> list[str]:
    if corpus is None:
        return []
    if isinstance(corpus, Mapping):
        return [document_text(doc) for doc in corpus.values()]
    if isinstance(corpus, str) or not isinstance(corpus, Sequence):
        raise TypeError(
            "corpus must be a list of texts or a dict {doc_id: text or {'title', 'text'}}, got "
            f"{type(corpus).__name__}."
        )
    out = [document_text(doc) for doc in corpus]
    bad = [i for i, t in enumerate(out) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"corpus item {bad[0]} is {type(out[bad[0]]).__name__}, expected a string or a dict.")
    return out


def _rerank_scores(reranker: Any, pairs: list[tuple[str, str]], batch_size: int) -> torch.Tensor:
    predict = getattr(reranker, "predict", None)
    if not callable(predict):
        raise TypeError(f"reranker must have predict(pairs) -> scores, got {type(reranker).__name__}.")
    out = predict(pairs, batch_size=batch_size)
    scores = torch.as_tensor(out, dtype=torch.float32).flatten()
    if scores.shape[0] != len(pairs):
        raise ValueError(f"reranker.predict returned {scores.shape[0]} scores for {len(pairs)} pairs.")
    return scores


def mine_hard_negatives(
    model: Any,
    dataset: Any,
    corpus: Any = None,
    *,
    anchor_column: str = "anchor",
    positive_column: str = "positive",
    range_min: int = 0,
    range_max: int | None = None,
    margin: float | None = None,
    relative_margin: float | None = None,
    max_score: float | None = None,
    min_score: float | None = None,
    num_negatives: int = 3,
    sampling_strategy: str = "top",
    batch_size: int = 32,
    chunk_size: int = 50_000,
    reranker: Any = None,
    output_format: str = "triplet",
    output_scores: bool = False,
    query_prompt: str | None = None,
    document_prompt: str | None = None,
    corpus_embeddings: torch.Tensor | None = None,
    seed: int = 0,
    show_progress_bar: bool = False,
) -> Any:
    """Add mined hard negatives to a dataset of (anchor, positive) rows.

    Args:
        model (`Any`): the retriever that ranks candidates: anything with `encode(texts)` (a
            [`SentenceEncoder`]); `encode_queries` / `encode_documents` are used when present.
            Scores are cosine similarities.
        dataset (`Any`): a `datasets.Dataset` with `anchor_column` and `positive_column`. Rows that share
            an anchor are one query with several positives; none of them is mined as a negative.
        corpus (`Any`, *optional*): extra candidate documents (a list of texts, or a BEIR dict `{id: {"title", "text"}}`
            whose documents become `title + " " + text`). Candidates are the de-duplicated union
            of the corpus and the positives; `None` mines from the positives only.
        range_min / range_max: rank window, 0-based and counted after the positives and the score
            and margin filters are applied: skip the `range_min` best surviving candidates (likely
            unlabelled positives) and never go past rank `range_max`. `range_max` defaults to
            `range_min + num_negatives + max positives per query`, or ``range_min + 10 *
            num_negatives + max positives`` when a score or margin filter is set.
        margin (`float | None`, *optional*): absolute margin: drop candidates with `score + margin > positive score`
            (0 keeps only candidates scored below the positive). With several positives the
            lowest positive score is used.
        relative_margin (`float | None`, *optional*): drop candidates with `score > pos - |pos| * relative_margin` (0.05 is
            NV-Retriever's TopK-PercPos 95%).
        max_score / min_score: drop candidates scored above / below these values.
        num_negatives (`int`, *optional*, defaults to `3`): negatives per query (>= 1).
        sampling_strategy (`str`, *optional*, defaults to `"top"`): `"top"` (the best surviving candidates in the window) or `"random"`
            (a uniform sample of the surviving candidates in the window, seeded by `seed`, then
            sorted by score).
        batch_size (`int`, *optional*, defaults to `32`): texts per forward pass (and pairs per reranker call). chunk_size: documents
            scored at once in the exact search.
        reranker (`Any`, *optional*): optional model with `predict(pairs, batch_size=...) -> scores` (a
            [`CrossEncoderReranker`]) that rescores the candidates and the positives before
            filtering; its scores then apply to `margin`/`max_score`/`min_score`.
        output_format (`str`, *optional*, defaults to `"triplet"`): `"triplet"` (one row per (anchor, positive, negative)), `"n-tuple"`
            (`negative_1 .. negative_n` columns; rows without `num_negatives` surviving
            candidates are dropped), or `"labeled-pair"` (`anchor`, `positive` column holding
            each document, `label` 1 for positives and 0 for negatives).
        output_scores (`bool`, *optional*, defaults to `False`): add a `mining_scores` column (`[positive, negative(s)]` scores; for
            `labeled-pair` the document's score).
        query_prompt / document_prompt: prompts for the anchors / candidates.
        corpus_embeddings (`torch.Tensor | None`, *optional*): precomputed embeddings of the candidate list (corpus + positives,
            de-duplicated, in that order), to skip embedding them.
        seed (`int`, *optional*, defaults to `0`): seed of the `random` strategy.
    Returns:
        A `datasets.Dataset`, with `info.description` left as is; the mining statistics are
        logged (how many candidates each filter removed, queries short of negatives).
    """

    if not hasattr(dataset, "column_names"):
        raise TypeError(f"dataset must be a datasets.Dataset, got {type(dataset).__name__}.")
    missing = [c for c in (anchor_column, positive_column) if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"dataset has no column(s) {missing}; found {dataset.column_names}. Pass anchor_column= / "
            "positive_column=."
        )
    if len(dataset) == 0:
        raise ValueError("The dataset is empty: nothing to mine negatives for.")
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, got {output_format!r}.")
    if sampling_strategy not in SAMPLING_STRATEGIES:
        raise ValueError(
            f"sampling_strategy must be one of {SAMPLING_STRATEGIES}, got {sampling_strategy!r}."
        )
    if not isinstance(num_negatives, int) or num_negatives < 1:
        raise ValueError(f"num_negatives must be an integer >= 1, got {num_negatives!r}.")
    if range_min < 0:
        raise ValueError(f"range_min must be >= 0, got {range_min}.")
    if chunk_size < 1 or batch_size < 1:
        raise ValueError(f"chunk_size and batch_size must be >= 1, got {chunk_size} and {batch_size}.")

    anchors_all = list(dataset[anchor_column])
    positives_all = list(dataset[positive_column])
    for name, col in ((anchor_column, anchors_all), (positive_column, positives_all)):
        bad = [i for i, t in enumerate(col) if not isinstance(t, str)]
        if bad:
            raise TypeError(
                f"Column {name!r} row {bad[0]} is {type(col[bad[0]]).__name__}, expected a string."
            )

    # Candidates: the corpus plus every positive, de-duplicated (first occurrence wins).
    candidates = list(dict.fromkeys(_corpus_texts(corpus) + positives_all))
    cand_index = {t: i for i, t in enumerate(candidates)}
    queries = list(dict.fromkeys(anchors_all))
    q_index = {t: i for i, t in enumerate(queries)}
    pos_of: list[list[int]] = [[] for _ in queries]
    for a, p in zip(anchors_all, positives_all):
        ids = pos_of[q_index[a]]
        if cand_index[p] not in ids:
            ids.append(cand_index[p])
    max_pos = max(len(p) for p in pos_of)
    filtering = any(x is not None for x in (margin, relative_margin, max_score, min_score))
    if range_max is None:
        range_max = range_min + (10 * num_negatives if filtering else num_negatives) + max_pos
    if range_max <= range_min:
        raise ValueError(f"range_max ({range_max}) must be larger than range_min ({range_min}).")
    if num_negatives > range_max - range_min:
        raise ValueError(
            f"Cannot keep {num_negatives} negatives from the window [range_min={range_min}, "
            f"range_max={range_max}): lower num_negatives or widen the window."
        )

    q_emb = encode_texts(
        model,
        queries,
        role="queries",
        batch_size=batch_size,
        prompt=query_prompt,
        show_progress_bar=show_progress_bar,
    )
    if corpus_embeddings is None:
        d_emb = encode_texts(
            model,
            candidates,
            role="documents",
            batch_size=batch_size,
            prompt=document_prompt,
            show_progress_bar=show_progress_bar,
        )
    else:
        d_emb = torch.as_tensor(corpus_embeddings).float()
        if d_emb.shape[0] != len(candidates):
            raise ValueError(
                f"corpus_embeddings has {d_emb.shape[0]} rows for {len(candidates)} candidates (corpus + positives, "
                "de-duplicated)."
            )
    q_emb, d_emb = F.normalize(q_emb.float(), dim=-1), F.normalize(d_emb.float(), dim=-1)

    k = min(range_max + max_pos, len(candidates))
    scores, indices = topk_chunked(q_emb, d_emb, k, chunk_size)
    pos_scores = [torch.stack([q_emb[qi] @ d_emb[j] for j in pos_of[qi]]) for qi in range(len(queries))]

    if reranker is not None:
        flat = [(queries[qi], candidates[j]) for qi in range(len(queries)) for j in indices[qi].tolist()]
        scores = _rerank_scores(reranker, flat, batch_size).view(len(queries), k)
        pos_pairs = [(queries[qi], candidates[j]) for qi in range(len(queries)) for j in pos_of[qi]]
        flat_pos = _rerank_scores(reranker, pos_pairs, batch_size)
        pos_scores = list(flat_pos.split([len(p) for p in pos_of]))

    neg_inf = float("-inf")
    scores = scores.clone()
    for qi in range(len(queries)):
        scores[qi][torch.isin(indices[qi], torch.tensor(pos_of[qi]))] = neg_inf
    removed: dict[str, int] = {}
    hardest_pos = torch.stack([p.min() for p in pos_scores])[:, None]

    def drop(name: str, mask: torch.Tensor) -> None:
        mask = mask & torch.isfinite(scores)
        if mask.any():
            removed[name] = int(mask.sum())
            scores[mask] = neg_inf

    if margin is not None:
        drop("margin", scores + margin > hardest_pos)
    if relative_margin is not None:
        drop("relative_margin", scores > hardest_pos - hardest_pos.abs() * relative_margin)
    if max_score is not None:
        drop("max_score", scores > max_score)
    if min_score is not None:
        drop("min_score", scores < min_score)

    width = min(range_max, k)
    win_scores, local = torch.topk(scores, width, dim=1)
    win_idx = indices.gather(1, local)
    win_scores, win_idx = win_scores[:, range_min:], win_idx[:, range_min:]
    if sampling_strategy == "top":
        neg_scores, neg_idx = win_scores[:, :num_negatives], win_idx[:, :num_negatives]
    else:
        rng = random.Random(seed)
        rows_s, rows_i = [], []
        for qi in range(len(queries)):
            n_ok = int(torch.isfinite(win_scores[qi]).sum())
            pick = sorted(rng.sample(range(n_ok), min(num_negatives, n_ok)))
            row_s = win_scores[qi, pick]
            row_i = win_idx[qi, pick]
            pad = num_negatives - len(pick)  # short rows are filled with -inf and dropped below
            rows_s.append(torch.cat([row_s, row_s.new_full((pad,), neg_inf)]))
            rows_i.append(torch.cat([row_i, row_i.new_zeros((pad,))]))
        neg_scores, neg_idx = torch.stack(rows_s), torch.stack(rows_i)
    if neg_scores.shape[1] < num_negatives:  # fewer candidates than asked for
        pad = num_negatives - neg_scores.shape[1]
        neg_scores = torch.cat([neg_scores, neg_scores.new_full((len(queries), pad), neg_inf)], 1)
        neg_idx = torch.cat([neg_idx, neg_idx.new_zeros((len(queries), pad))], 1)

    # Rows: queries in first-seen order, each with its positives in first-seen order.
    data: dict[str, list[Any]] = {}
    short = 0
    if output_format == "triplet":
        data = {anchor_column: [], positive_column: [], "negative": []}
        mined = []
        for qi, q in enumerate(queries):
            ok = [(int(j), float(s)) for j, s in zip(neg_idx[qi], neg_scores[qi]) if s != neg_inf]
            short += len(ok) < num_negatives
            for pj, ps in zip(pos_of[qi], pos_scores[qi].tolist()):
                for j, s in ok:
                    data[anchor_column].append(q)
                    data[positive_column].append(candidates[pj])
                    data["negative"].append(candidates[j])
                    mined.append([ps, s])
        if output_scores:
            data["mining_scores"] = mined
    elif output_format == "n-tuple":
        data = {
            anchor_column: [],
            positive_column: [],
            **{f"negative_{i + 1}": [] for i in range(num_negatives)},
        }
        mined = []
        for qi, q in enumerate(queries):
            if not torch.isfinite(neg_scores[qi]).all():
                short += 1
                continue
            for pj, ps in zip(pos_of[qi], pos_scores[qi].tolist()):
                data[anchor_column].append(q)
                data[positive_column].append(candidates[pj])
                for i, j in enumerate(neg_idx[qi].tolist()):
                    data[f"negative_{i + 1}"].append(candidates[j])
                mined.append([ps, *neg_scores[qi].tolist()])
        if output_scores:
            data["mining_scores"] = mined
    else:  # labeled-pair
        data = {anchor_column: [], positive_column: [], "label": []}
        mined = []
        for qi, q in enumerate(queries):
            ok = [(int(j), float(s)) for j, s in zip(neg_idx[qi], neg_scores[qi]) if s != neg_inf]
            short += len(ok) < num_negatives
            for pj, ps in zip(pos_of[qi], pos_scores[qi].tolist()):
                data[anchor_column].append(q)
                data[positive_column].append(candidates[pj])
                data["label"].append(1)
                mined.append(ps)
            for j, s in ok:
                data[anchor_column].append(q)
                data[positive_column].append(candidates[j])
                data["label"].append(0)
                mined.append(s)
        if output_scores:
            data["mining_scores"] = mined

    n_cand = len(queries) * k
    for name, n in removed.items():
        logger.info("%s removed %d of %d candidates (%.1f%%).", name, n, n_cand, 100 * n / n_cand)
    if short:
        logger.warning(
            "%d of %d queries got fewer than %d negatives (widen range_max, loosen the margins/max_score or "
            "lower range_min).",
            short,
            len(queries),
            num_negatives,
        )
    if output_format != "labeled-pair" and not data[anchor_column]:
        raise ValueError(
            "No query kept any negative: the filters removed every candidate (widen range_max or loosen margins)."
        )
    return Dataset.from_dict(data)


__all__ = ["OUTPUT_FORMATS", "mine_hard_negatives"]
