"""Semantic textual similarity (STS) evaluation.

The standard protocol of SimCSE and sentence-transformers: embed both sentences of each pair,
score the pair by a similarity (cosine by default; dot, negative euclidean and manhattan
distance too), and report the Spearman and Pearson correlations with the gold scores.
SentEval's STS12-16 tasks use the "all" setting: predictions and gold scores of every subset
are concatenated and one correlation is taken over the whole (`aggregate_senteval`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import pearsonr, spearmanr

from hf_contrastive.core.data.benchmarks import STSExample, load_sts_benchmark
from hf_contrastive.core.search import check_embeddings

logger = logging.getLogger(__name__)

SIMILARITIES = ("cosine", "dot", "euclidean", "manhattan")


def _pairs_from(
    data: Any, scores: Sequence[float] | None, columns: tuple[str, str, str]
) -> tuple[list[str], list[str], np.ndarray]:
    c1, c2, cs = columns
    if hasattr(data, "column_names"):  # datasets.Dataset
        missing = [c for c in columns if c not in data.column_names]
        if missing:
            raise ValueError(
                f"Dataset is missing column(s) {missing}; found {data.column_names}. Pass "
                "sentence1_column / sentence2_column / score_column to name them."
            )
        s1, s2, gold = list(data[c1]), list(data[c2]), list(data[cs])
    elif isinstance(data, Mapping):
        s1, s2 = list(data[c1]), list(data[c2])
        gold = list(data[cs]) if scores is None else list(scores)
    else:
        items = list(data)
        if items and isinstance(items[0], STSExample):
            s1 = [x.sentence1 for x in items]
            s2 = [x.sentence2 for x in items]
            gold = [x.score for x in items] if scores is None else list(scores)
        else:
            if scores is None:
                if items and len(items[0]) == 3:
                    s1, s2, gold = (list(col) for col in zip(*items))
                else:
                    raise ValueError(
                        "Expected (sentence1, sentence2, score) triples, or (sentence1, sentence2) pairs with "
                        "`scores=`."
                    )
            else:
                s1 = [p[0] for p in items]
                s2 = [p[1] for p in items]
                gold = list(scores)
    if not (len(s1) == len(s2) == len(gold)):
        raise ValueError(
            f"Mismatched lengths: {len(s1)} first sentences, {len(s2)} second sentences, {len(gold)} scores."
        )
    if not s1:
        raise ValueError("No STS pairs to evaluate.")
    gold_arr = np.asarray(gold, dtype=np.float64)
    if not np.isfinite(gold_arr).all():
        raise ValueError("Gold scores must be finite numbers.")
    return s1, s2, gold_arr


def pair_similarities(e1: torch.Tensor, e2: torch.Tensor, similarity: str) -> np.ndarray:
    """Row-wise similarity of two `[N, D]` embedding matrices (distances are negated)."""
    e1, e2 = torch.as_tensor(e1).double(), torch.as_tensor(e2).double()
    if similarity == "cosine":
        s = F.cosine_similarity(e1, e2, dim=-1)
    elif similarity == "dot":
        s = (e1 * e2).sum(-1)
    elif similarity == "euclidean":
        s = -(e1 - e2).norm(dim=-1)
    elif similarity == "manhattan":
        s = -(e1 - e2).abs().sum(-1)
    else:
        raise ValueError(f"Unknown similarity {similarity!r}; expected one of {SIMILARITIES}.")
    return s.cpu().numpy()


def _correlations(
    pred: np.ndarray, gold: np.ndarray, where: str = "", warn_gold: bool = True
) -> tuple[float, float]:
    """Spearman and Pearson of `pred` with `gold`; NaN, with a warning saying why, when undefined.

    `warn_gold=False` leaves the constant-gold warning to a caller that already gave it once.
    """
    reasons = []
    if not np.isfinite(pred).all():
        reasons.append(f"{int((~np.isfinite(pred)).sum())} predictions are NaN or infinite")
    elif np.std(pred) == 0:
        reasons.append(f"the predictions are constant ({pred[0]:.6g} for all {pred.shape[0]} pairs)")
    if np.std(gold) == 0:
        if not warn_gold and not reasons:
            return float("nan"), float("nan")
        reasons.append(f"the gold scores are constant ({gold[0]:.6g} for all {gold.shape[0]} pairs)")
    if reasons:
        logger.warning(
            "STS correlation%s is undefined and reported as NaN: %s.",
            f" ({where})" if where else "",
            "; ".join(reasons),
        )
        return float("nan"), float("nan")
    return float(spearmanr(pred, gold)[0]), float(pearsonr(pred, gold)[0])


def _encoder_fn(model: Any, batch_size: int, **encode_kwargs: Any) -> Callable[[list[str]], torch.Tensor]:
    if callable(getattr(model, "encode", None)):
        return lambda texts: torch.as_tensor(
            model.encode(texts, batch_size=batch_size, **encode_kwargs)
        ).float()
    if callable(model):
        return lambda texts: torch.as_tensor(model(texts)).float()
    raise TypeError(f"Expected a model with .encode(texts) or a callable, got {type(model).__name__}.")


def evaluate_sts(
    model: Any,
    data: Any,
    scores: Sequence[float] | None = None,
    *,
    batch_size: int = 32,
    similarities: Sequence[str] = SIMILARITIES,
    sentence1_column: str = "sentence1",
    sentence2_column: str = "sentence2",
    score_column: str = "score",
    return_predictions: bool = False,
    **encode_kwargs: Any,
) -> dict[str, Any]:
    """Correlation of embedding similarity with gold STS scores.

    Args:
        model (`Any`): anything with `encode(list[str], batch_size=...)` (a [`SentenceEncoder`], a
            sentence-transformers model) or a callable `texts -> [N, D]`.
        data (`Any`): `(s1, s2, score)` triples, `(s1, s2)` pairs with `scores=`, a list of
            `STSExample`, a mapping of columns, or a `datasets.Dataset`.
        similarities (`Sequence[str]`, *optional*, defaults to `SIMILARITIES`): which of `cosine`, `dot`, `euclidean`, `manhattan` to report.
    Returns:
        `{"spearman_cosine": ..., "pearson_cosine": ..., ...}` (plus `predictions_<sim>` arrays
        and `gold` with `return_predictions=True`). Correlations are in [-1, 1]; a correlation that is
        undefined (constant gold scores or constant predictions) is NaN and logged as a warning.
    Raises:
        `ValueError`: when the model returns NaN or infinite embeddings (the message names the pairs).
    """
    s1, s2, gold = _pairs_from(data, scores, (sentence1_column, sentence2_column, score_column))
    unknown = [s for s in similarities if s not in SIMILARITIES]
    if unknown:
        raise ValueError(f"Unknown similarity {unknown}; expected a subset of {SIMILARITIES}.")
    encode = _encoder_fn(model, batch_size, **encode_kwargs)
    e1, e2 = encode(s1), encode(s2)
    # A NaN embedding makes its pair's similarity NaN and every correlation NaN: refuse it, naming the pairs.
    check_embeddings(e1, what="first sentences (rows are pair indices)", refuse_zero=False)
    check_embeddings(e2, what="second sentences (rows are pair indices)", refuse_zero=False)
    constant_gold = bool(np.std(gold) == 0)
    if constant_gold:
        logger.warning(
            "The %d gold scores are all %.6g: every STS correlation is undefined and reported as NaN. "
            "Evaluate on pairs with varied scores.",
            gold.shape[0],
            gold[0],
        )
    out: dict[str, Any] = {}
    for sim in similarities:
        pred = pair_similarities(e1, e2, sim)
        out[f"spearman_{sim}"], out[f"pearson_{sim}"] = _correlations(
            pred, gold, sim, warn_gold=not constant_gold
        )
        if return_predictions:
            out[f"predictions_{sim}"] = pred
    if return_predictions:
        out["gold"] = gold
    return out


def aggregate_senteval(
    subsets: Mapping[str, tuple[Sequence[float], Sequence[float]]],
) -> dict[str, Any]:
    """SentEval's aggregation of an STS task made of subsets (STS12-16).

    Args:
        subsets (`Mapping[str, tuple[Sequence[float], Sequence[float]]]`): `{name: (predictions, gold)}` for each subset.
    Returns:
        `all` (Spearman and Pearson over the concatenation of every subset, SimCSE's reported
        setting), `mean` and `wmean` (per-subset Spearman averaged plainly and weighted by
        subset size), and each subset's figures under its name.
    """
    if not subsets:
        raise ValueError("aggregate_senteval needs at least one subset.")
    per = {}
    preds, golds = [], []
    for name, (pred, gold) in subsets.items():
        pred, gold = np.asarray(pred, dtype=np.float64), np.asarray(gold, dtype=np.float64)
        if pred.shape != gold.shape:
            raise ValueError(f"Subset {name!r}: {pred.shape[0]} predictions for {gold.shape[0]} gold scores.")
        sp, pe = _correlations(pred, gold, f"subset {name!r}")
        per[name] = {"spearman": sp, "pearson": pe, "n": int(pred.shape[0])}
        preds.append(pred)
        golds.append(gold)
    sp_all, pe_all = _correlations(np.concatenate(preds), np.concatenate(golds), "all subsets")
    n = np.array([v["n"] for v in per.values()], dtype=np.float64)
    sps = np.array([v["spearman"] for v in per.values()])
    pes = np.array([v["pearson"] for v in per.values()])
    return {
        "all": {"spearman": sp_all, "pearson": pe_all},
        "mean": {"spearman": float(sps.mean()), "pearson": float(pes.mean())},
        "wmean": {"spearman": float((sps * n).sum() / n.sum()), "pearson": float((pes * n).sum() / n.sum())},
        **per,
    }


class STSEvaluator:
    """Reusable STS evaluation (standalone or from a Trainer), with a metric prefix.

    `STSEvaluator(pairs, name="sts")(model)` returns `{"sts_spearman": ..., "sts_pearson": ...}`
    for the main similarity (cosine by default) plus `sts_spearman_<sim>` for the others.
    """

    def __init__(
        self,
        data: Any,
        scores: Sequence[float] | None = None,
        *,
        name: str = "sts",
        main_similarity: str = "cosine",
        similarities: Sequence[str] = ("cosine",),
        batch_size: int = 32,
        dataset_name: str | None = None,
        dataset_type: str | None = None,
        split: str | None = None,
        **columns: str,
    ) -> None:
        if main_similarity not in similarities:
            similarities = (main_similarity, *similarities)
        cols = (
            columns.get("sentence1_column", "sentence1"),
            columns.get("sentence2_column", "sentence2"),
            columns.get("score_column", "score"),
        )
        self.s1, self.s2, self.gold = _pairs_from(data, scores, cols)
        self.name = name
        # How the figures are described in model cards (model-index).
        self.dataset_name = dataset_name or name
        self.dataset_type = dataset_type or name
        self.split = split
        self.main_similarity = main_similarity
        self.similarities = tuple(similarities)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return len(self.gold)

    @classmethod
    def sts_benchmark(cls, split: str = "dev", path: str | None = None, **kwargs: Any) -> STSEvaluator:
        """STS Benchmark `split` from the benchmark data folder (see `load_sts_benchmark`)."""
        kwargs.setdefault("name", "sts")
        return cls(
            load_sts_benchmark(split, path),
            dataset_name="STS Benchmark",
            dataset_type="sentence-transformers/stsb",
            split="validation" if split == "dev" else split,
            **kwargs,
        )

    def __call__(self, model: Any) -> dict[str, float]:
        res = evaluate_sts(
            model,
            list(zip(self.s1, self.s2)),
            scores=self.gold,
            batch_size=self.batch_size,
            similarities=self.similarities,
        )
        out = {
            f"{self.name}_spearman": res[f"spearman_{self.main_similarity}"],
            f"{self.name}_pearson": res[f"pearson_{self.main_similarity}"],
        }
        for sim in self.similarities:
            if sim != self.main_similarity:
                out[f"{self.name}_spearman_{sim}"] = res[f"spearman_{sim}"]
        return out


__all__ = [
    "STSExample",
    "STSEvaluator",
    "aggregate_senteval",
    "evaluate_sts",
    "load_sts_benchmark",
    "pair_similarities",
    "SIMILARITIES",
]
