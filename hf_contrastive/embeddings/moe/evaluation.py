"""Pair classification by cosine threshold, per domain and over all domains (Hallee et al. 2024's metric).

A pair is called a match when the cosine similarity of its two embeddings reaches a threshold; the figure is
the F1 of the match class. The threshold that maximises F1 is searched on a dev split and then applied,
unchanged, to the test split (the paper's code picks it on the test split itself, which overstates F1).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hf_contrastive.embeddings.moe.data import DomainPair
from hf_contrastive.embeddings.moe.modeling import MoESentenceEncoder

__all__ = [
    "ALL_DOMAINS",
    "DomainPairEvaluator",
    "PairF1",
    "best_f1_threshold",
    "evaluate_domain_pairs",
    "f1_at_threshold",
]

ALL_DOMAINS = "all"
"""Key of the figures over the pairs of every domain pooled (one threshold for all)."""


def _check_scores(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"Got {s.size} scores for {y.size} labels: give one label per score.")
    if s.size == 0:
        raise ValueError("No pairs to score: scores and labels are empty.")
    if not np.isfinite(s).all():
        raise ValueError(f"{int((~np.isfinite(s)).sum())} score(s) are NaN or infinite.")
    if y.dtype == bool:
        y = y.astype(np.int64)
    if not np.isin(y, (0, 1)).all():
        raise ValueError(
            f"Labels must be 0 (no match) or 1 (match), got values {sorted(set(y.tolist()))[:5]}."
        )
    if not (y == 1).any():
        raise ValueError("F1 of the match class needs at least one pair labelled 1; all labels are 0.")
    return s, y.astype(np.int64)


def best_f1_threshold(
    scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray
) -> tuple[float, float]:
    """The threshold that maximises the F1 of "score >= threshold" against `labels`, and that F1.

    Every distinct cut of the sorted scores is tried in one pass (sort, cumulative true positives), so the
    search is `O(n log n)`; tied scores are never split. The threshold returned lies halfway between the
    lowest score called a match and the next lower score (the lowest score itself when every pair is called
    a match), so applying it to the same scores reproduces the F1. Among equal F1 values the highest
    threshold wins.

    Args:
        scores (`Sequence[float]` or `np.ndarray`):
            One similarity per pair (finite).
        labels (`Sequence[int]` or `np.ndarray`):
            1 for a matching pair, 0 otherwise; at least one 1.

    Returns:
        `tuple[float, float]`: `(threshold, f1)`.
    """
    s, y = _check_scores(scores, labels)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    true_pos = np.cumsum(y)
    called = np.arange(1, s.size + 1)
    f1 = 2.0 * true_pos / (called + int(y.sum()))
    # A cut after position k (k + 1 pairs called matches) is possible only where the next score is lower.
    cut = np.ones(s.size, dtype=bool)
    cut[:-1] = s[:-1] > s[1:]
    candidates = np.flatnonzero(cut)
    k = int(candidates[np.argmax(f1[candidates])])
    if k == s.size - 1:
        threshold = float(s[k])
    else:
        threshold = float((s[k] + s[k + 1]) / 2.0)
        if not threshold > s[k + 1]:  # adjacent floats: the midpoint rounds onto the lower score
            threshold = float(s[k])
    return threshold, float(f1[k])


@dataclass
class PairF1:
    """Pair-classification figures at one threshold.

    Args:
        f1 (`float`): F1 of the match class on the evaluated pairs.
        precision (`float`): matches found / pairs called matches (0 when none is called).
        recall (`float`): matches found / matching pairs.
        accuracy (`float`): pairs called right / pairs.
        threshold (`float`): the cosine threshold used ("score >= threshold" is a match).
        pairs (`int`): number of evaluated pairs.
        dev_f1 (`float`, *optional*): F1 on the dev split at this threshold (its best), when it was chosen there.
        dev_pairs (`int`, *optional*): number of dev pairs the threshold was chosen on.
    """

    f1: float
    precision: float
    recall: float
    accuracy: float
    threshold: float
    pairs: int
    dev_f1: float | None = None
    dev_pairs: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The figures as a plain dict."""
        return asdict(self)


def f1_at_threshold(
    scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray, threshold: float
) -> PairF1:
    """F1, precision, recall and accuracy of "score >= threshold" against `labels`.

    Args:
        scores (`Sequence[float]` or `np.ndarray`):
            One similarity per pair (finite).
        labels (`Sequence[int]` or `np.ndarray`):
            1 for a matching pair, 0 otherwise; at least one 1.
        threshold (`float`):
            The decision threshold (finite).
    """
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold)):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}.")
    s, y = _check_scores(scores, labels)
    called = s >= threshold
    true_pos = int((called & (y == 1)).sum())
    n_called, n_pos = int(called.sum()), int(y.sum())
    precision = true_pos / n_called if n_called else 0.0
    recall = true_pos / n_pos
    f1 = 2.0 * true_pos / (n_called + n_pos)
    accuracy = float((called == (y == 1)).mean())
    return PairF1(
        f1=f1, precision=precision, recall=recall, accuracy=accuracy, threshold=float(threshold), pairs=s.size
    )


# -- embedding pairs ---------------------------------------------------------------------------------------


def _as_pairs(data: Any, name: str) -> list[DomainPair]:
    """`DomainPair`s from a list of them, a list of row dicts, or a `datasets.Dataset` / dict of columns."""
    if isinstance(data, Mapping):
        columns = ("sentence1", "sentence2", "label", "domain")
        missing = [c for c in columns if c not in data]
        if missing:
            raise ValueError(f"{name} lacks column(s) {missing}; expected {list(columns)}.")
        rows: Iterable[Any] = (dict(zip(columns, values)) for values in zip(*(data[c] for c in columns)))
    elif hasattr(data, "column_names") and hasattr(data, "to_dict"):
        return _as_pairs(data.to_dict(), name)
    else:
        rows = data
    out = []
    for i, row in enumerate(rows):
        if isinstance(row, DomainPair):
            out.append(row)
        elif isinstance(row, Mapping):
            try:
                out.append(
                    DomainPair(row["sentence1"], row["sentence2"], int(row["label"]), str(row["domain"]))
                )
            except KeyError as err:
                raise ValueError(
                    f"{name} row {i} has no {err.args[0]!r} field; fields: {sorted(row)}."
                ) from None
        else:
            raise TypeError(f"{name} row {i} is a {type(row).__name__}; expected a DomainPair or a mapping.")
    if not out:
        raise ValueError(f"{name} holds no pairs.")
    return out


def _pair_scores(model: Any, pairs: list[DomainPair], batch_size: int) -> np.ndarray:
    """Cosine similarity of every pair, each text routed by its pair's domain when `model` has experts."""
    # A PEFT-wrapped encoder (LoRA during training) encodes through its base model, adapters included.
    model = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    routed = isinstance(model, MoESentenceEncoder)

    def key(text: str, domain: str) -> tuple[str, str]:
        return (text, domain if routed else "")

    keys = list(dict.fromkeys(key(t, p.domain) for p in pairs for t in (p.sentence1, p.sentence2)))
    index = {k: i for i, k in enumerate(keys)}
    texts = [t for t, _ in keys]
    if routed:
        emb = model.encode(texts, batch_size=batch_size, domain=[d for _, d in keys])
    else:
        emb = model.encode(texts, batch_size=batch_size)
    emb = F.normalize(torch.as_tensor(emb).double(), dim=-1)
    a = torch.tensor([index[key(p.sentence1, p.domain)] for p in pairs])
    b = torch.tensor([index[key(p.sentence2, p.domain)] for p in pairs])
    return (emb[a] * emb[b]).sum(-1).cpu().numpy()


def evaluate_domain_pairs(
    model: Any, dev: Any, test: Any, batch_size: int = 64, domains: Sequence[str] | None = None
) -> dict[str, PairF1]:
    """F1 at the best cosine threshold per domain and over all domains: thresholds chosen on `dev`, F1 on `test`.

    Args:
        model (`Any`):
            A [`MoESentenceEncoder`] (each text goes through its pair's domain expert) or any encoder with an
            `encode(texts, batch_size=...)` method (a dense [`SentenceEncoder`]: domains are ignored).
        dev (`Any`):
            Pairs the thresholds are chosen on: [`DomainPair`]s, row dicts or a `datasets.Dataset` with columns
            `sentence1`, `sentence2`, `label` (1 match, 0 not), `domain`.
        test (`Any`):
            Pairs the figures are reported on, in the same form.
        batch_size (`int`, *optional*, defaults to 64):
            Texts per forward pass.
        domains (`Sequence[str]`, *optional*):
            Domains to report (default: every domain of `test`). Each needs dev pairs.

    Returns:
        `dict[str, PairF1]`: one entry per domain and `"all"` (the pairs of the reported domains pooled, with one
        threshold chosen on their pooled dev pairs).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
    dev_pairs, test_pairs = _as_pairs(dev, "dev"), _as_pairs(test, "test")
    if domains is None:
        domains = list(dict.fromkeys(p.domain for p in test_pairs))
    domains = list(domains)
    if ALL_DOMAINS in domains:
        raise ValueError(f"{ALL_DOMAINS!r} names the pooled figures; rename that domain.")
    dev_pairs = [p for p in dev_pairs if p.domain in domains]
    test_pairs = [p for p in test_pairs if p.domain in domains]
    for split, pairs in (("dev", dev_pairs), ("test", test_pairs)):
        missing = sorted(set(domains) - {p.domain for p in pairs})
        if missing:
            raise ValueError(f"The {split} split has no pairs of domain(s) {missing}.")
    dev_scores = _pair_scores(model, dev_pairs, batch_size)
    test_scores = _pair_scores(model, test_pairs, batch_size)
    dev_labels = np.array([p.label for p in dev_pairs])
    test_labels = np.array([p.label for p in test_pairs])
    dev_domain = np.array([p.domain for p in dev_pairs])
    test_domain = np.array([p.domain for p in test_pairs])
    results: dict[str, PairF1] = {}
    for name in [*domains, ALL_DOMAINS]:
        on_dev = np.ones(len(dev_pairs), dtype=bool) if name == ALL_DOMAINS else dev_domain == name
        on_test = np.ones(len(test_pairs), dtype=bool) if name == ALL_DOMAINS else test_domain == name
        threshold, dev_f1 = best_f1_threshold(dev_scores[on_dev], dev_labels[on_dev])
        figures = f1_at_threshold(test_scores[on_test], test_labels[on_test], threshold)
        figures.dev_f1, figures.dev_pairs = dev_f1, int(on_dev.sum())
        results[name] = figures
    return results


class DomainPairEvaluator:
    """Dev-split F1 at the best cosine threshold, per domain and over all, for `ContrastiveTrainer(evaluators=...)`.

    Only the dev split is read (the threshold is chosen and scored on it), so the figures can steer training
    choices without touching a test split.

    Args:
        dev (`Any`):
            Pairs in any form [`evaluate_domain_pairs`] takes.
        name (`str`, *optional*, defaults to `"pairs"`):
            Prefix of the figures: `{name}_f1_{domain}` and `{name}_f1_all`.
        batch_size (`int`, *optional*, defaults to 64):
            Texts per forward pass.
    """

    def __init__(self, dev: Any, name: str = "pairs", batch_size: int = 64) -> None:
        self.pairs = _as_pairs(dev, "dev")
        self.name, self.batch_size = name, batch_size
        self.domains = list(dict.fromkeys(p.domain for p in self.pairs))

    def __call__(self, model: Any) -> dict[str, float]:
        scores = _pair_scores(model, self.pairs, self.batch_size)
        labels = np.array([p.label for p in self.pairs])
        domain = np.array([p.domain for p in self.pairs])
        out = {}
        for name in [*self.domains, ALL_DOMAINS]:
            keep = np.ones(len(self.pairs), dtype=bool) if name == ALL_DOMAINS else domain == name
            out[f"{self.name}_f1_{name}"] = best_f1_threshold(scores[keep], labels[keep])[1]
        return out
