"""Dataset column roles for contrastive training.

A training set names its columns by role, as sentence-transformers and the SimCSE scripts do:

==========================  =========================================  ==================
layout                      columns                                    objective
==========================  =========================================  ==================
unsupervised                one text column (`text` / `sentence`)  SimCSE dropout views
pairs                       anchor + positive                          InfoNCE / MNRL
triples (+ more negatives)  anchor + positive + negative(s)            InfoNCE, sup. SimCSE
scored pairs                sentence1 + sentence2 + score              CoSENT / regression
==========================  =========================================  ==================

Recognised names (case-insensitive) are listed in `ANCHOR_NAMES` etc.; a column whose name
starts with a negative prefix (`negative_1`, `hard_negative`, `neg2`...) is a negative.
Explicit names always win over detection. A detected score column (`label`, `score`, ...) that holds
integers or class labels is refused: those are class ids (NLI's entailment / neutral / contradiction),
not similarities; name it with `score_column` when the integers really are similarity scores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from datasets import ClassLabel, Value

ANCHOR_NAMES = (
    "anchor",
    "query",
    "sentence1",
    "sentence_1",
    "premise",
    "sent0",
    "text1",
    "question",
    "sentence_a",
)
POSITIVE_NAMES = (
    "positive",
    "pos",
    "sentence2",
    "sentence_2",
    "entailment",
    "hypothesis",
    "sent1",
    "text2",
    "document",
    "passage",
    "answer",
    "sentence_b",
)
NEGATIVE_PREFIXES = ("negative", "neg", "hard_negative", "contradiction", "sent2")
SCORE_NAMES = ("score", "scores", "label", "labels", "similarity", "similarity_score")
SINGLE_NAMES = ("text", "sentence", "sentences", "anchor")


@dataclass
class ColumnRoles:
    """Which column plays which role; `layout` is `unsupervised`, `pairs` or `scored_pairs`."""

    anchor: str
    positive: str | None = None
    negatives: list[str] = field(default_factory=list)
    score: str | None = None

    @property
    def layout(self) -> str:
        if self.positive is None:
            return "unsupervised"
        return "scored_pairs" if self.score is not None else "pairs"

    @property
    def text_columns(self) -> list[str]:
        cols = [self.anchor]
        if self.positive is not None:
            cols.append(self.positive)
        return cols + list(self.negatives)

    def describe(self) -> str:
        parts = [f"anchor={self.anchor!r}"]
        if self.positive:
            parts.append(f"positive={self.positive!r}")
        if self.negatives:
            parts.append(f"negatives={self.negatives!r}")
        if self.score:
            parts.append(f"score={self.score!r}")
        return f"{self.layout} ({', '.join(parts)})"


def _find(columns: Sequence[str], names: Sequence[str]) -> str | None:
    lower = {c.lower(): c for c in columns}
    for name in names:
        if name in lower:
            return lower[name]
    return None


def _strip_tokenised(columns: Sequence[str]) -> list[str]:
    # Pre-tokenised columns "<role>_input_ids" / "<role>_attention_mask" stand for "<role>".
    out = []
    for c in columns:
        for suffix in ("_input_ids", "_attention_mask", "_token_type_ids"):
            if c.endswith(suffix):
                c = c[: -len(suffix)]
                break
        if c not in out:
            out.append(c)
    return out


def _is_integer_feature(feature: Any) -> bool:
    if isinstance(feature, ClassLabel):
        return True
    return isinstance(feature, Value) and str(feature.dtype).startswith(("int", "uint", "bool"))


def resolve_column_roles(
    columns: Sequence[str],
    anchor: str | None = None,
    positive: str | None = None,
    negatives: Sequence[str] | None = None,
    score: str | None = None,
    features: Mapping[str, Any] | None = None,
) -> ColumnRoles:
    """Detect (or check the explicit) role of each column; raise a clear error when impossible.

    Args:
        columns (`Sequence[str]`): the dataset's column names.
        anchor (`str | None`, *optional*): explicit anchor column.
        positive (`str | None`, *optional*): explicit positive column.
        negatives (`Sequence[str] | None`, *optional*): explicit negative columns.
        score (`str | None`, *optional*): explicit score column; an integer column is taken as scores only
            when named here.
        features (`Mapping[str, Any] | None`, *optional*): the dataset's `features` (column types); with them a
            detected score column of integers or class labels raises instead of training on class ids.
    """
    available = _strip_tokenised(columns)
    explicit = {"anchor": anchor, "positive": positive, "score": score}
    for role, name in explicit.items():
        if name is not None and name not in available:
            raise ValueError(f"{role}_column={name!r} is not a column of the dataset; found {list(columns)}.")
    for name in negatives or ():
        if name not in available:
            raise ValueError(
                f"negative column {name!r} is not a column of the dataset; found {list(columns)}."
            )

    detected_score = None if score else _find(available, SCORE_NAMES)
    if (
        detected_score is not None
        and features is not None
        and _is_integer_feature(features.get(detected_score))
    ):
        kind = "class labels" if isinstance(features[detected_score], ClassLabel) else "integers"
        raise ValueError(
            f"Column {detected_score!r} holds {kind} ({features[detected_score]}), which look like class ids "
            "(e.g. NLI entailment / neutral / contradiction), not similarity scores; an integer column is never "
            "taken as a score by detection. If they really are similarity scores, pass "
            f"score_column={detected_score!r} (or cast the column to float). For NLI data, train on pairs "
            "(keep the entailment rows and drop the label column) or on triplets "
            "(anchor, positive=entailment, negative=contradiction). Columns: "
            f"{list(columns)}."
        )
    score = score or detected_score
    anchor = anchor or _find(available, ANCHOR_NAMES)
    positive = positive or _find([c for c in available if c != anchor], POSITIVE_NAMES)
    if negatives is None:
        negatives = [
            c
            for c in available
            if c not in (anchor, positive, score) and c.lower().startswith(NEGATIVE_PREFIXES)
        ]
    if anchor is None:
        text_cols = [c for c in available if c not in (score, *negatives)]
        single = _find(text_cols, SINGLE_NAMES)
        if single is None and len(text_cols) == 1:
            single = text_cols[0]
        if single is None or positive is not None and positive != single:
            raise ValueError(
                "Could not tell which column is the anchor. Expected one of "
                f"{ANCHOR_NAMES} (with a positive among {POSITIVE_NAMES}), or a single text column "
                f"{SINGLE_NAMES}; found columns {list(columns)}"
                + (f" (recognised: positive={positive!r})" if positive else "")
                + ". Name the roles with anchor_column / positive_column / negative_columns / score_column."
            )
        anchor, positive = single, None
    if positive is None and (negatives or score):
        found = ", ".join(f"{k}={v!r}" for k, v in (("anchor", anchor), ("score", score)) if v)
        raise ValueError(
            f"Found {found}{', negatives=' + repr(list(negatives)) if negatives else ''} but no positive column; "
            f"expected one of {POSITIVE_NAMES} (or set positive_column). Columns: {list(columns)}."
        )
    if score is not None and negatives:
        raise ValueError(
            f"Scored pairs cannot also have negative columns (found score={score!r}, negatives={list(negatives)})."
        )
    return ColumnRoles(anchor=anchor, positive=positive, negatives=list(negatives), score=score)


__all__ = ["ColumnRoles", "resolve_column_roles", "ANCHOR_NAMES", "POSITIVE_NAMES", "SCORE_NAMES"]
