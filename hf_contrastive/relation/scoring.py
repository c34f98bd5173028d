"""Relation-extraction metrics: the official SemEval-2010 Task 8 score, micro-F1 without the negative
class, and N-way K-shot episode accuracy.

`semeval2010_official_scores` reproduces `semeval2010_task8_scorer-v1.2.pl` (Hendrickx et al. 2010)
for a complete prediction file (every key id predicted, so nothing counts as "skipped"). The scorer
evaluates three times:

(i)   (2*9+1)-way: the 19 directed labels as they are;
(ii)  (9+1)-way ignoring direction: `Cause-Effect(e1,e2)` and `Cause-Effect(e2,e1)` merged;
(iii) (9+1)-way with directionality taken into account (**the official score**): relations are merged
      as in (ii), but a prediction of the right relation with the wrong direction is not correct. It is
      kept out of the confusion matrix (column `xDIRx`) and still counts as a prediction of that
      relation: for relation R, `P = correct_R / (predicted_R + wrong_direction_R)` and
      `R = correct_R / gold_R`.

In each, per-relation `F1 = 2PR / (P + R)`; the **macro** figures average the per-relation P, R and F1
(average of F1s, not F1 of the averages) over the relations other than `Other` that occur in the
key; the **micro** figures pool the counts of those relations. Predictions of labels that are not in
the key only enter other relations' recall (as the scorer does). The official figure is the macro F1
of (iii); the scorer prints it in percent, these functions return fractions in [0, 1].
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from hf_contrastive.relation.data import SEMEVAL_LABELS

_DIRECTION = re.compile(r"\(e[12],e[12]\)$")


def _undirected(label: str) -> str:
    return _DIRECTION.sub("", label)


def _check_pairs(gold: Sequence[Any], pred: Sequence[Any]) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"gold and pred must have the same length, got {len(gold)} and {len(pred)}.")
    if len(gold) == 0:
        raise ValueError("gold and pred are empty.")


def _prf(correct: float, predicted: float, actual: float) -> tuple[float, float, float]:
    p = correct / predicted if predicted else 0.0
    r = correct / actual if actual else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def _evaluate(
    gold: list[str], pred: list[str], other: str, wrong_direction: Counter | None
) -> dict[str, Any]:
    """One of the scorer's evaluations over (possibly merged) labels; see the module docstring."""
    gold_counts = Counter(gold)
    proposed = Counter(
        p for g, p in zip(gold, pred) if not (wrong_direction is not None and p == "WRONG_DIR")
    )
    correct = Counter(g for g, p in zip(gold, pred) if g == p)
    per_label: dict[str, dict[str, float]] = {}
    sums = {"p": 0.0, "r": 0.0, "f1": 0.0}
    micro_correct = micro_predicted = micro_actual = 0
    for label in sorted(gold_counts):
        wrong = wrong_direction.get(label, 0) if wrong_direction is not None else 0
        predicted = proposed.get(label, 0) + wrong
        p = correct[label] / predicted if proposed.get(label, 0) else 0.0
        r = correct[label] / gold_counts[label]
        f = 2 * p * r / (p + r) if p + r else 0.0
        per_label[label] = {
            "precision": p,
            "recall": r,
            "f1": f,
            "correct": correct[label],
            "predicted": predicted,
            "actual": gold_counts[label],
            "wrong_direction": wrong,
        }
        if label != other:
            sums["p"] += p
            sums["r"] += r
            sums["f1"] += f
            micro_correct += correct[label]
            micro_predicted += predicted
            micro_actual += gold_counts[label]
    n = sum(1 for label in gold_counts if label != other)
    micro = _prf(micro_correct, micro_predicted, micro_actual)
    accuracy = sum(correct.values()) / len(gold)
    return {
        "per_label": per_label,
        "macro_precision": sums["p"] / n if n else 0.0,
        "macro_recall": sums["r"] / n if n else 0.0,
        "macro_f1": sums["f1"] / n if n else 0.0,
        "micro_precision": micro[0],
        "micro_recall": micro[1],
        "micro_f1": micro[2],
        "accuracy": accuracy,
    }


def semeval2010_official_scores(
    gold: Sequence[str], pred: Sequence[str], other_label: str = "Other"
) -> dict[str, Any]:
    """The three evaluations of the official SemEval-2010 Task 8 scorer (v1.2) for full predictions.

    Args:
        gold / pred: directed labels (`Cause-Effect(e1,e2)`, ..., `Other`), aligned.
    Returns:
        ``{"official_macro_f1": ..., "directed_19way": {...}, "undirected_10way": {...},
        "directed_10way": {...}}`: each evaluation has `macro_f1`, `macro_precision``,
        `macro_recall`, `micro_f1`, `micro_precision`, `micro_recall`, `accuracy` and
        `per_label`; `official_macro_f1` is `directed_10way["macro_f1"]`, the figure the scorer
        reports as "macro-averaged F1 (9+1)-way with directionality taken into account".
    """
    _check_pairs(gold, pred)
    gold = [str(g) for g in gold]
    pred = [str(p) for p in pred]
    nineteen = _evaluate(gold, pred, other_label, None)
    g10 = [_undirected(g) for g in gold]
    p10 = [_undirected(p) for p in pred]
    ten_nodir = _evaluate(g10, p10, other_label, None)
    wrong_direction: Counter = Counter()
    p10_dir = []
    for g, p, gu, pu in zip(gold, pred, g10, p10):
        if g != p and gu == pu:
            wrong_direction[gu] += 1
            p10_dir.append("WRONG_DIR")
        else:
            p10_dir.append(pu)
    ten_dir = _evaluate(g10, p10_dir, other_label, wrong_direction)
    return {
        "official_macro_f1": ten_dir["macro_f1"],
        "directed_19way": nineteen,
        "undirected_10way": ten_nodir,
        "directed_10way": ten_dir,
    }


def relation_micro_f1(
    gold: Sequence[Any], pred: Sequence[Any], negative_label: Any = "Other"
) -> dict[str, float]:
    """Micro precision, recall and F1 over exact (directed) labels, leaving out the negative class.

    The TACRED convention that TKRE reports: `correct` = predictions equal to a gold label that is
    not `negative_label`; `predicted` = predictions other than `negative_label`; `actual` = gold
    labels other than `negative_label`.
    """
    _check_pairs(gold, pred)
    correct = sum(1 for g, p in zip(gold, pred) if g == p and g != negative_label)
    predicted = sum(1 for p in pred if p != negative_label)
    actual = sum(1 for g in gold if g != negative_label)
    p, r, f = _prf(correct, predicted, actual)
    return {"precision": p, "recall": r, "f1": f}


def episode_accuracy(
    query_labels: Sequence[Sequence[int]], predictions: Sequence[Sequence[int]]
) -> dict[str, float]:
    """Mean and standard deviation (over episodes) of N-way K-shot query accuracy.

    Args:
        query_labels / predictions: one sequence of class indices per episode.
    Returns:
        `{"accuracy": mean over all queries, "episode_mean", "episode_std", "episodes"}`.
    """
    if len(query_labels) != len(predictions) or not query_labels:
        raise ValueError(
            f"Need one prediction list per episode; got {len(query_labels)} label lists and {len(predictions)}."
        )
    accs = []
    hits = total = 0
    for i, (gold, pred) in enumerate(zip(query_labels, predictions)):
        if len(gold) != len(pred) or not gold:
            raise ValueError(f"Episode {i}: {len(gold)} query labels but {len(pred)} predictions.")
        h = sum(int(g == p) for g, p in zip(gold, pred))
        accs.append(h / len(gold))
        hits += h
        total += len(gold)
    mean = sum(accs) / len(accs)
    var = sum((a - mean) ** 2 for a in accs) / max(len(accs) - 1, 1)
    return {
        "accuracy": hits / total,
        "episode_mean": mean,
        "episode_std": var**0.5,
        "episodes": float(len(accs)),
    }


def relation_scores(
    gold: Sequence[str], pred: Sequence[str], no_relation_label: str | None = None
) -> dict[str, float]:
    """The figures a relation trainer reports: `micro_f1` / `micro_precision` / `micro_recall`
    without `no_relation_label`, `accuracy` and, when every gold and predicted label is a
    SemEval-2010 label, `official_macro_f1` (see [`semeval2010_official_scores`])."""

    _check_pairs(gold, pred)
    micro = relation_micro_f1(gold, pred, no_relation_label)
    out = {
        "micro_f1": micro["f1"],
        "micro_precision": micro["precision"],
        "micro_recall": micro["recall"],
        "accuracy": sum(int(g == p) for g, p in zip(gold, pred)) / len(gold),
    }
    schema = set(SEMEVAL_LABELS)
    if all(g in schema for g in gold) and all(p in schema for p in pred):
        out["official_macro_f1"] = semeval2010_official_scores(gold, pred)["official_macro_f1"]
    return out


__all__ = ["episode_accuracy", "relation_micro_f1", "relation_scores", "semeval2010_official_scores"]
